"""Simulation and rendering backends: Vulkan driver selection, device checks and ManiSkill backend arguments."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sim.errors import SimUnavailableError

SIM_BACKENDS = ("cpu", "gpu")
LAVAPIPE_ICD = Path("/usr/share/vulkan/icd.d/lvp_icd.json")
NVIDIA_ICDS = (Path("/usr/share/vulkan/icd.d/nvidia_icd.json"), Path("/etc/vulkan/icd.d/nvidia_icd.json"))
VULKAN_HINT = (
    "SAPIEN found no Vulkan rendering device. Install one: on Debian 12 run ./install.sh as root "
    "(it installs Mesa 25 lavapipe: `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`), "
    "or install the NVIDIA driver with its Vulkan ICD; then retry "
    "(VK_DRIVER_FILES={}; set it to the driver's ICD json if that is wrong)"
)


def configure_vulkan() -> None:
    """Point Vulkan at Mesa lavapipe when it is installed and no NVIDIA driver is (call before sapien loads)."""
    if any(icd.exists() for icd in NVIDIA_ICDS) or not LAVAPIPE_ICD.exists():
        return
    os.environ.setdefault("VK_DRIVER_FILES", str(LAVAPIPE_ICD))


def check_sim_backend(sim_backend: str) -> None:
    """Raise ValueError for an unknown backend and SimUnavailableError when `gpu` is asked for without CUDA."""
    if sim_backend not in SIM_BACKENDS:
        raise ValueError(f"unknown sim backend {sim_backend!r}; valid: {', '.join(SIM_BACKENDS)}")
    if sim_backend == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SimUnavailableError(
                "--sim-backend gpu needs a CUDA GPU (ManiSkill GPU-parallel PhysX and rendering), but torch sees none; "
                "use --sim-backend cpu (the default) on this machine"
            )


def maniskill_backend_kwargs(sim_backend: str) -> dict[str, Any]:
    """The gym.make arguments that select ManiSkill's physics and render backends for `sim_backend`."""
    check_sim_backend(sim_backend)
    if sim_backend == "gpu":
        return {"sim_backend": "physx_cuda", "render_backend": "gpu"}
    return {"sim_backend": "physx_cpu", "render_backend": "cpu"}


def explain_render_failure(err: BaseException) -> SimUnavailableError | None:
    """Turn SAPIEN's 'no rendering device' failure into an error that says what to install; None for other errors."""
    text = str(err).lower()
    if "rendering device" in text or "vulkan" in text or "incompatibledriver" in text:
        return SimUnavailableError(VULKAN_HINT.format(os.environ.get("VK_DRIVER_FILES", "unset")) + f" [{err}]")
    return None
