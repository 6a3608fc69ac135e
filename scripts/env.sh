# Source this file to use vlkd_ros from this checkout: `source scripts/env.sh` (ROS 2 Kilted: .venv, install/)
# or `VLKD_ROS_DISTRO=jazzy source scripts/env.sh` (ROS 2 Jazzy: .venv-jazzy, install-jazzy/; ./install.sh --ros jazzy).
_VLKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
case "${VLKD_ROS_DISTRO:-kilted}" in
    kilted) _VENV="$_VLKD_ROOT/.venv"; _IF="$_VLKD_ROOT/install/vlkd_interfaces" ;;
    jazzy) _VENV="$_VLKD_ROOT/.venv-jazzy"; _IF="$_VLKD_ROOT/install-jazzy/vlkd_interfaces" ;;
    *) echo "scripts/env.sh: ROS 2 distro '$VLKD_ROS_DISTRO' is not supported (tested: kilted, jazzy)" >&2
       _VENV="" ;;
esac
if [ -n "$_VENV" ] && [ ! -f "$_VENV/bin/activate" ]; then
    echo "scripts/env.sh: no venv at $_VENV; run ./install.sh${VLKD_ROS_DISTRO:+ --ros $VLKD_ROS_DISTRO}" >&2
    _VENV=""
fi
if [ -n "$_VENV" ]; then
    export VLKD_ROS_DISTRO="${VLKD_ROS_DISTRO:-kilted}"
    source "$_VENV/bin/activate"
    # SAPIEN renders with Mesa's software Vulkan (lavapipe) when no GPU driver is present.
    if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/share/vulkan/icd.d/lvp_icd.json ] && ! command -v nvidia-smi >/dev/null; then
        export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json
    fi
    # The vlkd_interfaces package built by scripts/build_interfaces.sh for this distro, and none of another's: a
    # shell that sourced the other distro first would load its libraries into this one's Python.
    _vlkd_drop_builds() { printf '%s' "$1" | tr ':' '\n' | grep -v -e "^$_VLKD_ROOT/install/" -e "^$_VLKD_ROOT/install-[a-z]*/" \
        | paste -sd: - || true; }
    PYTHONPATH=$(_vlkd_drop_builds "${PYTHONPATH:-}")
    LD_LIBRARY_PATH=$(_vlkd_drop_builds "${LD_LIBRARY_PATH:-}")
    AMENT_PREFIX_PATH=$(_vlkd_drop_builds "${AMENT_PREFIX_PATH:-}")
    unset -f _vlkd_drop_builds
    if [ -d "$_IF" ]; then
        export PYTHONPATH="$_IF/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
        export LD_LIBRARY_PATH="$_IF/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export AMENT_PREFIX_PATH="$_IF${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    fi
fi
unset _IF _VENV
