#!/usr/bin/env bash
# Builds the vlkd_interfaces ROS 2 package with colcon against the pip ROS wheels of one distro:
#   kilted (default): .venv -> build/, install/vlkd_interfaces, log/
#   jazzy:            .venv-jazzy -> build-jazzy/, install-jazzy/vlkd_interfaces, log-jazzy/
# Usage: VENV=.venv scripts/build_interfaces.sh   (idempotent; FORCE=1 rebuilds even when up to date)
#        VLKD_ROS_DISTRO=jazzy scripts/build_interfaces.sh
# The distro is VLKD_ROS_DISTRO, else the one whose rclpy wheel the venv holds, else kilted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PKG=vlkd_interfaces

die() { echo "build_interfaces.sh: error: $*" >&2; exit 1; }

case "${VLKD_ROS_DISTRO:-}" in
    "") ;;
    kilted|jazzy) DEFAULT_VENV=.venv; [ "$VLKD_ROS_DISTRO" = kilted ] || DEFAULT_VENV=".venv-$VLKD_ROS_DISTRO"
                  VENV=${VENV:-$DEFAULT_VENV} ;;
    *) die "ROS 2 distro '$VLKD_ROS_DISTRO' is not supported (tested: kilted, jazzy)" ;;
esac
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
[ -x "$VENV/bin/python" ] || die "no Python venv at $VENV (run ./install.sh, or set VENV=path/to/venv)"
PY="$VENV/bin/python"
# The distro whose rclpy wheel the venv holds (empty: none yet).
VENV_DISTRO=$("$PY" -c 'import importlib.metadata as m
for d in ("kilted", "jazzy"):
    try:
        m.distribution(f"ros-{d}-rclpy"); print(d); break
    except m.PackageNotFoundError:
        pass')
DISTRO=${VLKD_ROS_DISTRO:-${VENV_DISTRO:-kilted}}
[ -z "$VENV_DISTRO" ] || [ "$VENV_DISTRO" = "$DISTRO" ] \
    || die "$VENV holds the ROS 2 $VENV_DISTRO wheels, not $DISTRO (VLKD_ROS_DISTRO=$DISTRO wants .venv-$DISTRO)"
if [ "$DISTRO" = kilted ]; then SUFFIX=""; BUILD_REQUIREMENTS=requirements-ros-build.txt
else SUFFIX="-$DISTRO"; BUILD_REQUIREMENTS="requirements-ros-build-$DISTRO.txt"; fi
INSTALL_BASE="install$SUFFIX"
INSTALL="$ROOT/$INSTALL_BASE/$PKG"
STAMP="$INSTALL/.build_stamp"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYVER" = 3.11 ] || die "the ros-$DISTRO wheels are built for Python 3.11, but $PY is Python $PYVER"

# Build tools that no pip wheel provides.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
{ command -v cc >/dev/null || command -v gcc >/dev/null; } || missing+=("C compiler (gcc)")
{ command -v c++ >/dev/null || command -v g++ >/dev/null; } || missing+=("C++ compiler (g++)")
PY_INCLUDE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$PY_INCLUDE/Python.h" ] || missing+=("Python headers ($PY_INCLUDE/Python.h)")
if [ ${#missing[@]} -gt 0 ]; then
    die "missing: ${missing[*]}. On Debian/Ubuntu: apt-get install -y cmake make gcc g++ python3-dev"
fi

# The message wheels' CMake exports name their build machine's include dirs; CMake refuses to generate
# until they exist. Point them at this Python's headers and this venv's numpy headers, also when the build
# is up to date: the links are machine-wide, and a colcon workspace (or another venv's build) needs them too.
NUMPY_INCLUDE=$("$PY" -c 'import numpy; print(numpy.get_include())')
OPT_PY=/opt/python/cp311-cp311
link_dir() {  # link_dir TARGET LINK: make LINK a symlink to TARGET unless LINK is a real directory
    local target=$1 link=$2
    if [ -d "$link" ] && [ ! -L "$link" ]; then return 0; fi
    mkdir -p "$(dirname "$link")" || die "cannot create $(dirname "$link") (run as root, or create it as a symlink to $target)"
    ln -sfn "$target" "$link"
}
link_dir "$PY_INCLUDE" "$OPT_PY/include/python3.11"
link_dir "$NUMPY_INCLUDE" "$OPT_PY/lib/python3.11/site-packages/numpy/_core/include"

# Up to date? The stamp hashes the package sources, the build-wheel list, the venv's Python and the
# versions of its ROS wheels (the generated libraries link against them).
build_stamp() {
    { find "$PKG" -type f -print0 | sort -z | xargs -0 sha256sum
      sha256sum "$BUILD_REQUIREMENTS"
      readlink -f "$PY"
      ls "$VENV/lib/python$PYVER/site-packages" | grep -E '^ros_.*\.dist-info$' || true
    } | sha256sum | cut -d' ' -f1
}
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(build_stamp)" ]; then
    echo "build_interfaces.sh: $PKG ($DISTRO) is up to date in $INSTALL_BASE/$PKG"
    exit 0
fi

# 1. Build-time wheels (ament_cmake, rosidl generators, colcon).
"$PY" -m pip install -q -r "$BUILD_REQUIREMENTS"

# 2. colcon build of this one package (build/, install/, log/ at the repo root; build-jazzy/, ... for jazzy).
export PATH="$VENV/bin:$PATH"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export MAKEFLAGS="-j$(nproc)"
rm -f "$STAMP"
"$VENV/bin/colcon" --log-base "log$SUFFIX" build \
    --base-paths "$PKG" --packages-select "$PKG" \
    --build-base "build$SUFFIX" --install-base "$INSTALL_BASE" \
    --event-handlers status- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    || { tail -n 40 "log$SUFFIX/latest_build/$PKG/stdout_stderr.log" >&2 || true
         die "colcon build of $PKG failed; full log: log$SUFFIX/latest_build/$PKG/stdout_stderr.log"; }

[ -d "$INSTALL/lib/python$PYVER/site-packages/$PKG" ] \
    || die "build finished but $INSTALL/lib/python$PYVER/site-packages/$PKG is missing"
build_stamp > "$STAMP"
if [ "$DISTRO" = kilted ]; then HOWTO="source scripts/env.sh"; else HOWTO="VLKD_ROS_DISTRO=$DISTRO source scripts/env.sh"; fi
echo "build_interfaces.sh: built $PKG ($DISTRO) into $INSTALL_BASE/$PKG (use it with: $HOWTO)"
