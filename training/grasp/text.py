"""The text side of the grasp model: positive/negative prompts per object name, and the teacher's text tower
saved with the model dir so a robot without the teacher's image tower can still embed any new object name."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from training.checkpoint import save_weights
from training.teacher import Teacher, encode_label_texts, resolve_device
from training.text import LabelTextConfig, LabelTextError, label_texts, resolve_label_texts
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.errors import VlkdError

POSITIVE_PROMPT = "You can find a {} in this image, except a robot arm."
NEGATIVE_PROMPT = "You cannot find a {} in this image, except a robot arm."
# Top-level keys of an open_clip CLIP model's state dict that belong to its text tower.
_CLIP_TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
_PROBES = [["a photo of a dog."], [POSITIVE_PROMPT.format("red brick") + " a small clay block"]]


class TextTowerError(VlkdError, ValueError):
    """The teacher's text tower cannot be saved, rebuilt or does not reproduce the teacher."""


@dataclass
class GraspTextConfig(LabelTextConfig):
    """Object prompts: `templates` say the object is there, `negative_templates` that it is not (a pair per
    name, as in the paper; empty negatives = one prompt with a learnt bias); `use_descriptions` appends the
    object's rich description to both."""

    templates: list[str] = field(default_factory=lambda: [POSITIVE_PROMPT])
    negative_templates: list[str] = field(default_factory=lambda: [NEGATIVE_PROMPT])

    def validate(self) -> None:
        """Each template needs exactly one `{}` slot."""
        super().validate()
        for t in self.negative_templates:
            if t.count("{}") != 1:
                raise LabelTextError(f"negative template {t!r} must contain exactly one '{{}}' for the object name")


def prompt_texts(names: list[str], config: GraspTextConfig, descriptions: dict[str, str] | None = None
                 ) -> tuple[list[list[str]], list[list[str]] | None]:
    """(positive texts per name, negative texts per name or None when there are no negative templates)."""
    pos = label_texts(names, config, None, descriptions)
    if not config.negative_templates:
        return pos, None
    return pos, label_texts(names, replace(config, templates=config.negative_templates), None, descriptions)


def resolve_prompt_texts(names: list[str], config: GraspTextConfig, dataset_descriptions: dict[str, str] | None = None
                         ) -> tuple[list[list[str]], list[list[str]] | None]:
    """Training-time prompt_texts: descriptions from `config.descriptions` or the dataset, all required when
    `use_descriptions` is on."""
    pos = resolve_label_texts(names, config, dataset_descriptions)
    if not config.negative_templates:
        return pos, None
    return pos, resolve_label_texts(names, replace(config, templates=config.negative_templates), dataset_descriptions)


def text_config_card(config: GraspTextConfig) -> dict[str, Any]:
    """What the runtime needs to rebuild prompts (no file paths)."""
    return {"templates": list(config.templates), "negative_templates": list(config.negative_templates),
            "use_descriptions": bool(config.use_descriptions)}


class TextTower:
    """An open_clip text tower (tokenizer + transformer + projection) without the image tower."""

    CONFIG = "open_clip_config.json"
    WEIGHTS = "text.safetensors"

    def __init__(self, module: torch.nn.Module, tokenizer: Any, model_cfg: dict[str, Any],
                 device: str | torch.device = "cpu"):
        self.device = resolve_device(str(device))
        self.module = module.to(self.device).eval().requires_grad_(False)
        self.tokenizer, self.model_cfg = tokenizer, model_cfg

    @property
    def embed_dim(self) -> int:
        """Output feature size (the teacher's embedding dim)."""
        return int(self.model_cfg["embed_dim"])

    def encode(self, texts_per_label: list[list[str]]) -> torch.Tensor:
        """(C, D) normalised features on the CPU, computed exactly like Teacher.encode_texts."""
        return encode_label_texts(self.module, self.tokenizer, texts_per_label, self.device)

    @classmethod
    def from_teacher(cls, teacher: Teacher) -> "TextTower":
        """Copy the teacher's text tower and check it reproduces the teacher's text features."""
        import open_clip
        from open_clip.model import _build_text_tower

        cfg = _model_config(teacher.model_name)
        text = cfg.get("text_cfg", {})
        if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
            raise TextTowerError(f"teacher {teacher.config.model} has a Hugging Face text tower; the grasp model "
                                 "dir can only carry open_clip's own text transformer")
        model = teacher.model
        if hasattr(model, "text"):
            state, blocks = model.text.state_dict(), model.text
        else:
            state = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in _CLIP_TEXT_KEYS}
            blocks = model.transformer
        cfg["quick_gelu"] = any(type(m).__name__ == "QuickGELU" for m in blocks.modules())
        module = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=cfg["quick_gelu"])
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TextTowerError(f"cannot rebuild the text tower of {teacher.config.model}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
        tower = cls(module, open_clip.get_tokenizer(teacher.model_name), cfg, teacher.device)
        ref = teacher.encode_texts(_PROBES)
        diff = float((tower.encode(_PROBES) - ref).abs().max())
        if not diff < 1e-4:
            raise TextTowerError(f"the rebuilt text tower of {teacher.config.model} differs from the teacher "
                                 f"by {diff:.2e}")
        return tower

    def save(self, folder: str | os.PathLike) -> Path:
        """Write open_clip_config.json (a `local-dir:` config, which also names the tokenizer) and the weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / self.WEIGHTS, lambda tmp: save_weights(tmp, self.module.state_dict()))
        atomic_write_json(folder / self.CONFIG, {"model_cfg": self.model_cfg, "preprocess_cfg": {}})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "TextTower":
        """Rebuild a saved tower (no image tower is created)."""
        import open_clip
        from open_clip.model import _build_text_tower

        folder = Path(folder)
        path = folder / cls.CONFIG
        if not path.is_file():
            raise TextTowerError(f"{path} not found: the model dir carries no text encoder")
        cfg = json.loads(path.read_text())["model_cfg"]
        module = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))
        module.load_state_dict(load_file(str(folder / cls.WEIGHTS)))
        return cls(module, open_clip.get_tokenizer(f"local-dir:{folder}"), cfg, device)


def _model_config(model: str) -> dict[str, Any]:
    import open_clip

    if model.startswith("local-dir:"):
        path = Path(model[len("local-dir:"):]) / "open_clip_config.json"
        return copy.deepcopy(json.loads(path.read_text())["model_cfg"])
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise TextTowerError(f"no open_clip config for teacher {model!r}; the text tower cannot be saved")
    return copy.deepcopy(cfg)
