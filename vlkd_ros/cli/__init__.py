"""`vlkd` command line: thin glue over the library; each subcommand group lives in its own module."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules under vlkd_ros.cli that each expose `register(subparsers)`; a subcommand sets `func(args) -> int`.
COMMAND_MODULES = ("distill", "tools", "miniworld", "serve", "collect", "grasp")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """Build the `vlkd` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="vlkd", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"vlkd_ros.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vlkd` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"vlkd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlkd {args.command}: interrupted", file=sys.stderr)
        return 130
