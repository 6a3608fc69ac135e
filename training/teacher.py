"""The frozen CLIP teacher: any open_clip model (named weights, a local weights file or a `local-dir:` folder)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlkd_formats.errors import VlkdError
from vlkd_formats.hashing import file_sha256


PACKAGED_MODEL_CONFIGS = Path(__file__).parent / "model_configs"
# Named teachers shipped with the package (like open_clip's table of named weights): name -> local-dir folder.
# vlkd-offline: single-object renders (the mini-world's teacher); vlkd-table: also object crops and whole scenes
# from clutter (configs/pretrain_teacher_table.yaml; each folder's CARD.md has its data, seeds and figures)
SHIPPED_TEACHERS = {"vlkd-offline": Path(__file__).parent / "assets" / "offline_teacher",
                    "vlkd-table": Path(__file__).parent / "assets" / "table_teacher"}


def resolve_model_name(model: str) -> str:
    """Map a shipped teacher name to its `local-dir:` folder; other names pass through unchanged."""
    if model in SHIPPED_TEACHERS:
        folder = SHIPPED_TEACHERS[model]
        if not (folder / "open_clip_config.json").is_file():
            raise TeacherLoadError(f"shipped teacher {model!r} is missing from {folder}; "
                                   "recreate it with `vlkd pretrain-teacher`")
        return f"local-dir:{folder}"
    return model


class TeacherLoadError(VlkdError, ValueError):
    """The teacher model or its weights cannot be loaded."""


@dataclass
class TeacherConfig:
    """Which open_clip model plays the teacher, and how its features are computed and cached."""

    model: str = "ViT-L-14"
    pretrained: str | None = "openai"
    model_config_dir: str | None = None
    batch_size: int = 32
    cache_dir: str = "runs/cache"
    device: str = "auto"

    def validate(self) -> None:
        """Check numeric fields."""
        if self.batch_size < 1:
            raise TeacherLoadError(f"teacher.batch_size must be >= 1, got {self.batch_size}")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Teacher:
    """A frozen open_clip model with normalised image/text encoders and its preprocessing."""

    def __init__(self, config: TeacherConfig):
        import open_clip

        self.config = config
        self.device = resolve_device(config.device)
        open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
        if config.model_config_dir:
            open_clip.add_model_config(config.model_config_dir)
        pretrained = config.pretrained
        if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise TeacherLoadError(f"teacher.pretrained file {pretrained} does not exist")
        self.model_name = resolve_model_name(config.model)
        known = self.model_name.startswith(("local-dir:", "hf-hub:")) or self.model_name in open_clip.list_models()
        if not known:
            raise TeacherLoadError(f"unknown open_clip model {config.model!r}; e.g. {open_clip.list_models()[:8]} "
                                   f"or a shipped teacher {sorted(SHIPPED_TEACHERS)}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device=self.device, weights_only=True)
        except pickle.UnpicklingError as err:
            raise TeacherLoadError(
                f"refusing to load {pretrained}: it is a pickle with objects other than tensors "
                f"(weights load only from safetensors or weights-only checkpoints): {err}") from err
        except RuntimeError as err:
            if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err):
                raise TeacherLoadError(f"weights {pretrained} do not fit model {config.model}: "
                                       f"{str(err).splitlines()[0]}") from err
            raise
        self.model = model.eval().requires_grad_(False)
        self._fingerprint: dict[str, Any] | None = None
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(self.model_name)
        self.embed_dim = int(self.model.text_projection.shape[-1] if isinstance(
            getattr(self.model, "text_projection", None), torch.Tensor) else _probe_dim(self.model, self.device))
        visual = self.model.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(m) for m in getattr(visual, "image_mean", None) or _OPENAI_MEAN)
        self.std = tuple(float(s) for s in getattr(visual, "image_std", None) or _OPENAI_STD)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this teacher's features: model, exact weights and preprocessing (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> dict[str, Any]:
        pretrained = self.config.pretrained
        if pretrained and Path(pretrained).is_file():
            weights = "sha256:" + file_sha256(pretrained)
        elif self.model_name.startswith("local-dir:"):
            folder = Path(self.model_name[len("local-dir:"):])
            weights = "dir:" + hashlib.sha256(b"".join(
                file_sha256(p).encode() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()
        else:
            weights = f"tag:{pretrained}"
        return {"model": self.config.model, "weights": weights, "preprocess": repr(self.preprocess)}

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of a preprocessed batch (B, 3, H, W), returned on the CPU."""
        return F.normalize(self.model.encode_image(images.to(self.device)).float(), dim=-1).cpu()

    def encode_texts(self, texts_per_label: list[list[str]]) -> torch.Tensor:
        """One feature per label: normalised mean over its template texts, renormalised. (C, D) on the CPU."""
        return encode_label_texts(self.model.encode_text, self.tokenizer, texts_per_label, self.device)


@torch.no_grad()
def encode_label_texts(encode_text: Any, tokenizer: Any, texts_per_label: list[list[str]],
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """(C, D) on the CPU: per label, the renormalised mean of its texts' normalised `encode_text(tokens)`."""
    out = []
    for texts in texts_per_label:
        tokens = tokenizer(texts).to(device)
        feats = F.normalize(encode_text(tokens).float(), dim=-1).mean(0)
        out.append(F.normalize(feats, dim=-1))
    return torch.stack(out).cpu()


_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".safetensors", ".pt", ".pth", ".bin", ".ckpt"))


def _probe_dim(model: Any, device: torch.device) -> int:
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1])


def teacher_card(teacher: Teacher) -> dict[str, Any]:
    """JSON-able summary of the teacher for model cards."""
    return {"model": teacher.config.model, "pretrained": teacher.config.pretrained,
            "embed_dim": teacher.embed_dim, "image_size": teacher.image_size,
            "mean": list(teacher.mean), "std": list(teacher.std),
            "fingerprint": json.loads(json.dumps(teacher.fingerprint()))}
