"""Where a served grasp model and its few-shot state live: the shipped default model (package data
`vlkd_ros/models/grasp_default/`, or the dir $VLKD_DEFAULT_MODEL_DIR names instead) and the state dir that
few-shot learning on a model dir writes to (`vlkd_formats.state_dir`).
"""
from __future__ import annotations

import os
from pathlib import Path

from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import CARD_FILE, REGISTRY_FILE
from vlkd_formats.state_dir import default_state_dir
from vlkd_runtime.grasp_dir import base_state_card

DEFAULT_MODEL_ENV = "VLKD_DEFAULT_MODEL_DIR"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "grasp_default"


class NoDefaultModelError(VlkdError, ValueError):
    """No model dir was given and the default grasp model is not installed."""


def shipped_model_dir() -> Path:
    """Where the default grasp model is looked for: $VLKD_DEFAULT_MODEL_DIR if set, else the package's copy."""
    override = os.environ.get(DEFAULT_MODEL_ENV)
    return Path(override) if override else SHIPPED_MODEL_DIR


def default_model_dir() -> Path:
    """The default grasp model dir (`shipped_model_dir`), or NoDefaultModelError when it is not there."""
    path = shipped_model_dir()
    if not (path / CARD_FILE).is_file():
        raise NoDefaultModelError(f"no model dir given, and the default grasp model is not installed "
                                  f"({path / CARD_FILE} not found): pass --model-dir PATH (vlkd serve; --model for "
                                  "vlkd add-object) or set the node parameter model_dir (model_dir:=PATH)")
    return path


def state_dir_for(root: Path, state_dir: str | os.PathLike | None) -> Path | None:
    """Where few-shot learning on the model dir `root` writes: `state_dir` when given; else the per-user default
    state dir when `root` is the default model or is not writable; else None (into `root` itself)."""
    if state_dir:
        return Path(state_dir)
    shipped = shipped_model_dir()
    writable = os.access(root, os.W_OK) and os.access(root / REGISTRY_FILE, os.W_OK)
    if writable and not (shipped.exists() and root.resolve() == shipped.resolve()):
        return None
    card = base_state_card(root)
    return default_state_dir(card.model, card.base_weights_sha256)
