"""Shared fixtures: a small synthetic image dataset in the anchor-repo layout and a tiny open_clip teacher file."""
from __future__ import annotations

from pathlib import Path

import pytest

from grasp_fixtures import (tiny_clutter, tiny_dense_grasp_model, tiny_detector_grasp_model,  # noqa: F401 (shared)
                            tiny_grasp_model, tiny_rgbd_grasp_model, torch_single_thread)
from shapes_data import make_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic dataset (4 ID labels, 4 OOD labels)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="session")
def tiny_teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised VLKD-Tiny open_clip model saved as safetensors (loaded like pretrained='openai')."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from training.teacher import PACKAGED_MODEL_CONFIGS

    open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
    torch.manual_seed(0)
    model = open_clip.create_model("VLKD-Tiny", pretrained=None)
    path = tmp_path_factory.mktemp("teacher") / "vlkd_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path

