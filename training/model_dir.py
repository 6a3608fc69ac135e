"""The model-dir format (version 1): what training writes and the inference API / exporters read.

    model.json                 ModelCard: architecture, input spec, teacher, labels
    model.safetensors          student weights
    text_features.safetensors  teacher text features: "id" (Y_id) and "ood" (Y_ood), rows in label order
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import CheckpointError, load_weights_into, save_weights
from training.students import Student, StudentConfig
from vlkd_formats.atomic_io import atomic_write, atomic_write_json

FORMAT = "vlkd-model"
VERSION = 1


@dataclass
class ModelCard:
    """Everything needed to rebuild and feed the student without the training code's config."""

    student: dict[str, Any]
    embed_dim: int
    image_size: int
    mean: list[float]
    std: list[float]
    teacher: dict[str, Any]
    labels: dict[str, list[str]]
    texts: dict[str, list[list[str]]] = field(default_factory=dict)
    logit_scale: float = 1 / 0.07
    info: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION


def write_model_dir(out: str | os.PathLike, model: Student, card: ModelCard,
                    text_features: dict[str, torch.Tensor]) -> Path:
    """Write weights, text features and card; the card goes last so a readable card means a complete dir."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_weights(tmp, model.state_dict()))
    atomic_write(out / "text_features.safetensors",
                 lambda tmp: save_file({k: v.contiguous() for k, v in text_features.items()}, tmp))
    atomic_write_json(out / "model.json", asdict(card))
    return out


def read_model_card(model_dir: str | os.PathLike) -> ModelCard:
    """Read and check `model.json`."""
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {model_dir} is not a vlkd model dir (train one with `vlkd distill`)")
    card = ModelCard(**json.loads(path.read_text()))
    if card.format != FORMAT or card.version != VERSION:
        raise CheckpointError(f"{path}: format {card.format!r} v{card.version} is not {FORMAT!r} v{VERSION}")
    return card


def load_model_dir(model_dir: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> tuple[Student, ModelCard, dict[str, torch.Tensor]]:
    """Rebuild the student from a model dir: (model in eval mode, card, text features)."""
    card = read_model_card(model_dir)
    model = Student(StudentConfig(**card.student), card.embed_dim, card.image_size)
    if model.edu is not None:
        model.set_attention_text(torch.zeros(len(card.labels["id"]), card.embed_dim))
    load_weights_into(model, Path(model_dir) / "model.safetensors", "model weights")
    text = load_file(str(Path(model_dir) / "text_features.safetensors"))
    return model.to(device).eval(), card, text
