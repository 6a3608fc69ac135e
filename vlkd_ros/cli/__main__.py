"""`python -m vlkd_ros.cli` runs the `vlkd` command line."""
import sys

from vlkd_ros.cli import main

sys.exit(main())
