#!/usr/bin/env bash
# Writes the resolved package set of the venv as `name==version` lines, sorted, with no machine paths (a package
# installed from a local wheel, `name @ file:///...`, is recorded by its version like any other).
#
# Usage: scripts/update_lock.sh [OUT]     (OUT defaults to the tracked constraints-lock.txt, from .venv)
#        VLKD_ROS_DISTRO=jazzy scripts/update_lock.sh   (the tracked constraints-lock-jazzy.txt, from .venv-jazzy)
#
# ./install.sh runs it with OUT=.venv/constraints-resolved.txt (untracked), so an install never modifies tracked
# files. Run it without OUT after a deliberate, tested upgrade and commit constraints-lock.txt; reproduce the locked
# set elsewhere with `pip install -c constraints-lock.txt -r requirements.txt -r requirements-ros.txt`
# (Jazzy: `-c constraints-lock-jazzy.txt -r requirements.txt -r requirements-ros-jazzy.txt`).
# Left out: this project (vlkd_ros), the locally built vlkd_interfaces, editable installs, and pip/setuptools/wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${VLKD_ROS_DISTRO:-kilted}" in
    kilted) VENV=${VENV:-.venv}; LOCK=constraints-lock.txt ;;
    jazzy) VENV=${VENV:-.venv-jazzy}; LOCK=constraints-lock-jazzy.txt ;;
    *) echo "update_lock.sh: ROS 2 distro '$VLKD_ROS_DISTRO' is not supported (tested: kilted, jazzy)" >&2; exit 2 ;;
esac
OUT=${1:-$LOCK}
"$VENV/bin/python" - "$OUT" <<'EOF'
import json
import subprocess
import sys

SKIP = {"vlkd-ros", "vlkd-interfaces", "pip", "setuptools", "wheel", "distribute"}
listed = json.loads(subprocess.run([sys.executable, "-m", "pip", "list", "--format=json", "--exclude-editable"],
                                   check=True, capture_output=True, text=True).stdout)
keep = sorted((p for p in listed if p["name"].lower().replace("_", "-") not in SKIP), key=lambda p: p["name"].lower())
lines = [f"{p['name']}=={p['version']}" for p in keep]
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
__import__("os").replace(tmp, sys.argv[1])
print(f"update_lock.sh: {len(lines)} packages -> {sys.argv[1]}")
EOF
