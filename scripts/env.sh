# Source this file to use vlkd_ros from this checkout: `source scripts/env.sh`
_VLKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
source "$_VLKD_ROOT/.venv/bin/activate"
# SAPIEN renders with Mesa's software Vulkan (lavapipe) when no GPU driver is present.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/share/vulkan/icd.d/lvp_icd.json ] && ! command -v nvidia-smi >/dev/null; then
    export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json
fi
# The vlkd_interfaces package built by scripts/build_interfaces.sh
_IF="$_VLKD_ROOT/install/vlkd_interfaces"
if [ -d "$_IF" ]; then
    export PYTHONPATH="$_IF/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
    export LD_LIBRARY_PATH="$_IF/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$_IF${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
unset _IF
