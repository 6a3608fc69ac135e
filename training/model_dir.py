"""Writing and loading model dirs (format `vlkd-model` v2; the layout is in `vlkd_formats.model_dir`).

Training writes the deployable model dir to `output_dir/model/` (`RUN_MODEL_DIR`); loaders accept the model dir
or the run dir holding it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import load_weights_into, save_weights
from training.students import Student, StudentConfig
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.model_dir import (CARD_FILE, RUN_MODEL_DIR, TEXT_FEATURES_FILE, WEIGHTS_FILE, ModelCard,
                                    ModelDirError, read_card, resolve_model_dir, write_card)

__all__ = ["RUN_MODEL_DIR", "ModelCard", "load_model_dir", "read_model_card", "training_config_tree",
           "write_model_dir"]


def write_model_dir(out: str | os.PathLike, model: Student, card: ModelCard, text_features: dict[str, torch.Tensor],
                    more: Callable[[Path], None] | None = None) -> Path:
    """Write weights, text features, then `more(out)` (a grasp dir's parts), then the card into the model dir `out`
    (training writes `output_dir/model`); the card goes last, so a readable card means a complete dir."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_weights(tmp, model.state_dict()))
    atomic_write(out / TEXT_FEATURES_FILE,
                 lambda tmp: save_file({k: v.contiguous() for k, v in text_features.items()}, tmp))
    if more is not None:
        more(out)
    write_card(out, card)
    return out


def read_model_card(model_dir: str | os.PathLike, expect_kind: str | None = None) -> ModelCard:
    """Read and check `model.json` of a model dir (or of the run dir holding it); see `vlkd_formats.read_card`."""
    return read_card(model_dir, expect_kind)


def load_model_dir(model_dir: str | os.PathLike, device: str | torch.device = "cpu", expect_kind: str | None = None
                   ) -> tuple[Student, ModelCard, dict[str, torch.Tensor]]:
    """Rebuild the student from a model dir (or the run dir holding it): (model in eval mode, card, text features)."""
    root = resolve_model_dir(model_dir)
    card = read_card(root, expect_kind)
    model = Student(StudentConfig(**card.student), card.embed_dim, card.image_size)
    if model.edu is not None:
        model.set_attention_text(torch.zeros(len(card.labels["id"]), card.embed_dim))
    load_weights_into(model, root / WEIGHTS_FILE, "model weights")
    text = load_file(str(root / TEXT_FEATURES_FILE))
    return model.to(device).eval(), card, text


def training_config_tree(model_dir: str | os.PathLike, expect_kind: str | None = None) -> dict:
    """A copy of the training config recorded in the card (what `vlkd eval` / `vlkd eval-grasp` rebuild the data,
    teacher and texts from; the run dir is not needed), as a raw tree for overrides."""
    root = resolve_model_dir(model_dir)
    card = read_card(root, expect_kind)
    if not card.training:
        raise ModelDirError(f"{root / CARD_FILE} records no training config: add the job's config as `training` "
                            "to model.json")
    return copy.deepcopy(card.training)

