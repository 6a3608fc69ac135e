"""Writing and loading model dirs (format `vlkd-model` v2; the layout is in `vlkd_formats.model_dir`), and the
converter of v1 dirs (the files straight in the training run dir) to it.

Training writes the deployable model dir to `output_dir/model/` (`RUN_MODEL_DIR`); loaders accept the model dir
or the run dir holding it.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import load_weights_into, save_weights
from training.students import Student, StudentConfig
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.config import read_yaml_tree
from vlkd_formats.model_dir import (CARD_FILE, DISTILL_ENTRIES, FORMAT, GRASP_ENTRIES, GRASP_FILE, GRASP_FORMAT,
                                    GRASP_VERSION, KIND_DISTILL, KIND_GRASP, OPTIONAL_ENTRIES, RUN_CONFIG_FILE,
                                    RUN_MODEL_DIR, TEXT_FEATURES_FILE, VERSION, WEIGHTS_FILE, ModelCard, ModelDirError,
                                    read_card, resolve_model_dir, write_card)

__all__ = ["RUN_MODEL_DIR", "ModelCard", "convert_model_dir", "load_model_dir", "read_model_card",
           "training_config_tree", "write_model_dir"]


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
        raise ModelDirError(f"{root / CARD_FILE} records no training config (a dir converted without its run's "
                            f"{RUN_CONFIG_FILE}): convert it again from the run dir that has {RUN_CONFIG_FILE}, or "
                            "add the config as `training` to model.json")
    return copy.deepcopy(card.training)


def convert_model_dir(old_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Convert a v1 model dir (files straight in the training run dir, model.json without `kind`) to a v2 model dir
    at `out` (default OLD_DIR/model): the deployable files are copied, the card gets its kind and the run's
    config.yaml (what `vlkd eval` / `vlkd eval-grasp` read), grasp.json its new version. Nothing in OLD_DIR is
    changed or deleted; the new dir appears in one rename when complete. Returns the new model dir."""
    old = Path(old_dir)
    card_path = old / CARD_FILE
    if not card_path.is_file():
        raise ModelDirError(f"{card_path} not found: {old} is not a v1 model dir (nothing to convert)")
    try:
        raw = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelDirError(f"{card_path} is not valid JSON: {err}") from err
    if raw.get("format") != FORMAT:
        raise ModelDirError(f"{card_path}: format {raw.get('format')!r} is not {FORMAT!r}")
    if raw.get("version") != 1:
        raise ModelDirError(f"{old} is already a model dir of format v{raw.get('version')}; there is nothing to "
                            "convert")
    kind = KIND_GRASP if (old / GRASP_FILE).is_file() else KIND_DISTILL
    entries = GRASP_ENTRIES if kind == KIND_GRASP else DISTILL_ENTRIES
    missing = [e for e in entries if not (old / e).exists()]
    if missing:
        raise ModelDirError(f"{old} is an incomplete v1 {kind} model dir: {missing} missing")
    new = Path(out) if out is not None else old / RUN_MODEL_DIR
    if new.exists() and any(new.iterdir()):
        raise ModelDirError(f"{new} exists and is not empty; pass another output dir (--out)")
    config = old / RUN_CONFIG_FILE
    training = read_yaml_tree(config) if config.is_file() else {}
    card = ModelCard(**{**raw, "kind": kind, "training": training, "version": VERSION})
    new.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{new.name}.converting-", dir=new.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; the model dir gets the usual permissions
        for entry in entries[1:] + OPTIONAL_ENTRIES[kind]:
            src = old / entry
            if src.is_dir():
                shutil.copytree(src, tmp / entry)
            elif src.is_file():
                shutil.copy2(src, tmp / entry)
        if kind == KIND_GRASP:
            grasp = json.loads((old / GRASP_FILE).read_text())
            if grasp.get("format") != GRASP_FORMAT or grasp.get("version") != 1:
                raise ModelDirError(f"{old / GRASP_FILE}: format {grasp.get('format')!r} v{grasp.get('version')} "
                                    f"is not {GRASP_FORMAT!r} v1")
            atomic_write_json(tmp / GRASP_FILE, {**grasp, "version": GRASP_VERSION})
        write_card(tmp, card)
        if new.exists():
            new.rmdir()  # empty (checked above)
        os.replace(tmp, new)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    read_card(new, kind)  # the converted dir reads as a v2 dir of its kind
    return new
