#!/usr/bin/env bash
# Builds the vlkd_interfaces ROS 2 package with colcon against the pip ROS wheels into install/vlkd_interfaces.
# Usage: VENV=.venv scripts/build_interfaces.sh   (idempotent; FORCE=1 rebuilds even when up to date)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PKG=vlkd_interfaces
INSTALL="$ROOT/install/$PKG"
STAMP="$INSTALL/.build_stamp"

die() { echo "build_interfaces.sh: error: $*" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || die "no Python venv at $VENV (run ./install.sh, or set VENV=path/to/venv)"
PY="$VENV/bin/python"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYVER" = 3.11 ] || die "the ros-kilted wheels are built for Python 3.11, but $PY is Python $PYVER"

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

# Up to date? The stamp hashes the package sources, the build-wheel list, the venv's Python and the
# versions of its ROS wheels (the generated libraries link against them).
build_stamp() {
    { find "$PKG" -type f -print0 | sort -z | xargs -0 sha256sum
      sha256sum requirements-ros-build.txt
      readlink -f "$PY"
      ls "$VENV/lib/python$PYVER/site-packages" | grep -E '^ros_.*\.dist-info$' || true
    } | sha256sum | cut -d' ' -f1
}
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(build_stamp)" ]; then
    echo "build_interfaces.sh: $PKG is up to date in install/$PKG"
    exit 0
fi

# 1. Build-time wheels (ament_cmake, rosidl generators, colcon).
"$PY" -m pip install -q -r requirements-ros-build.txt
NUMPY_INCLUDE=$("$PY" -c 'import numpy; print(numpy.get_include())')

# 2. The message wheels' CMake exports name their build machine's include dirs; CMake refuses to
#    generate until they exist. Point them at this Python's headers and this venv's numpy headers.
OPT_PY=/opt/python/cp311-cp311
link_dir() {  # link_dir TARGET LINK: make LINK a symlink to TARGET unless LINK is a real directory
    local target=$1 link=$2
    if [ -d "$link" ] && [ ! -L "$link" ]; then return 0; fi
    mkdir -p "$(dirname "$link")" || die "cannot create $(dirname "$link") (run as root, or create it as a symlink to $target)"
    ln -sfn "$target" "$link"
}
link_dir "$PY_INCLUDE" "$OPT_PY/include/python3.11"
link_dir "$NUMPY_INCLUDE" "$OPT_PY/lib/python3.11/site-packages/numpy/_core/include"

# 3. colcon build of this one package (build/, install/, log/ at the repo root).
export PATH="$VENV/bin:$PATH"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export MAKEFLAGS="-j$(nproc)"
rm -f "$STAMP"
"$VENV/bin/colcon" --log-base log build \
    --base-paths "$PKG" --packages-select "$PKG" \
    --build-base build --install-base install \
    --event-handlers status- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    || { tail -n 40 "log/latest_build/$PKG/stdout_stderr.log" >&2 || true
         die "colcon build of $PKG failed; full log: log/latest_build/$PKG/stdout_stderr.log"; }

[ -d "$INSTALL/lib/python$PYVER/site-packages/$PKG" ] \
    || die "build finished but $INSTALL/lib/python$PYVER/site-packages/$PKG is missing"
build_stamp > "$STAMP"
echo "build_interfaces.sh: built $PKG into install/$PKG (use it with: source scripts/env.sh)"
