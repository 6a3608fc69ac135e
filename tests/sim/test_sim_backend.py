"""Backend selection: Vulkan driver default, GPU refusal without CUDA, Vulkan failures explained."""
import pytest
import torch

from sim import backend
from sim.errors import SimUnavailableError


def test_lavapipe_is_chosen_only_without_nvidia(tmp_path, monkeypatch):
    icd = tmp_path / "lvp_icd.json"
    icd.write_text("{}")
    monkeypatch.setattr(backend, "LAVAPIPE_ICD", icd)
    monkeypatch.setattr(backend, "NVIDIA_ICDS", (tmp_path / "nvidia_icd.json",))
    environ: dict[str, str] = {}
    monkeypatch.setattr(backend.os, "environ", environ)
    backend.configure_vulkan()
    assert environ == {"VK_DRIVER_FILES": str(icd)}
    environ.clear()
    (tmp_path / "nvidia_icd.json").write_text("{}")
    backend.configure_vulkan()
    assert environ == {}
    environ["VK_DRIVER_FILES"] = "mine.json"
    (tmp_path / "nvidia_icd.json").unlink()
    backend.configure_vulkan()
    assert environ == {"VK_DRIVER_FILES": "mine.json"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_backend_without_cuda_says_so():
    with pytest.raises(SimUnavailableError, match="needs a CUDA GPU.*--sim-backend cpu"):
        backend.maniskill_backend_kwargs("gpu")


def test_backend_names_and_vulkan_messages():
    assert backend.maniskill_backend_kwargs("cpu") == {"sim_backend": "physx_cpu", "render_backend": "cpu"}
    with pytest.raises(ValueError, match="valid: cpu, gpu"):
        backend.check_sim_backend("quantum")
    explained = backend.explain_render_failure(RuntimeError("failed to find a rendering device"))
    assert "mesa-vulkan-drivers" in str(explained)
    assert backend.explain_render_failure(RuntimeError("something else")) is None
