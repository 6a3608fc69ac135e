"""The state dir (`vlkd-state` v1): a writable folder that overlays a grasp model dir with everything few-shot
learning writes, so a shipped model dir (tracked files, site-packages) is only ever read.

    STATE/
        state.json                   StateCard: format, version, and the base model it belongs to (its name, the
                                     SHA-256 and version of the weights its registry names)
        registry.json                the served registry (the commit point), as in a model dir
        weights/ objects/ onnx/      added weights, shots and the ONNX exports of added weights, as in a model dir
        .lock                        the writer lock (`vlkd_formats.dir_lock`)

A state dir belongs to one base model: one whose state.json names other weights is refused (`StateDirError`),
never mixed. A relative path its registry names is read from the state dir when it is there, else from the model
dir (few-shot files are numbered by commit, and a commit continues the base registry's counter, so the two never
hold one name with different contents). The per-user default is `default_state_dir`; the model dir layout is in
`vlkd_formats.model_dir`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import REGISTRY_FILE, RUN_MODEL_DIR, file_slug

FORMAT = "vlkd-state"
VERSION = 1
STATE_FILE = "state.json"
STATE_APP_DIR = "vlkd_ros"  # the folder under $XDG_STATE_HOME that holds the per-user state dirs


class StateDirError(VlkdError, ValueError):
    """A state dir belongs to another model, is not a state dir, or is of a format this code does not read."""


@dataclass(frozen=True)
class StateCard:
    """Which base model a state dir belongs to: its name and the weights its registry names (SHA-256, version)."""

    model: str
    base_weights_sha256: str
    base_model_version: str
    format: str = FORMAT
    version: int = VERSION


@dataclass(frozen=True)
class ModelFiles:
    """Where a grasp model's files are: the model dir `root`, and the state dir `state` overlaying it (None: few-shot
    learning writes into the model dir itself)."""

    root: Path
    state: Path | None = None

    @property
    def writable(self) -> Path:
        """The dir few-shot learning writes to (weights, shots, ONNX, registry, writer lock)."""
        return self.root if self.state is None else self.state

    def path(self, rel: str) -> Path:
        """The file a registry's relative path names: in the state dir when it is there, else in the model dir."""
        if self.state is not None and (self.state / rel).is_file():
            return self.state / rel
        return self.root / rel

    def registry_dir(self) -> Path:
        """The dir whose registry.json is served: the state dir once it holds one, else the model dir."""
        if self.state is not None and (self.state / REGISTRY_FILE).is_file():
            return self.state
        return self.root


def model_name(root: Path) -> str:
    """A model dir's name for state dirs: its folder's name (its run dir's for a run's `model/`), as a file slug."""
    root = Path(root).resolve()
    return file_slug(root.parent.name if root.name == RUN_MODEL_DIR else root.name, "model")


def default_state_dir(model: str, weights_sha256: str) -> Path:
    """`${XDG_STATE_HOME:-~/.local/state}/vlkd_ros/<model>-<sha8 of its weights>` (a relative XDG_STATE_HOME is
    ignored, as the XDG spec says)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    home = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return home / STATE_APP_DIR / f"{file_slug(model, 'model')}-{weights_sha256[:8]}"


def read_state_card(state_dir: str | os.PathLike) -> StateCard | None:
    """The state dir's card, or None when it holds none yet (absent, or nothing committed to it)."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        card = StateCard(**json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise StateDirError(f"{path} is not a valid state card: {err}") from err
    if card.format != FORMAT or card.version != VERSION:
        raise StateDirError(f"{path}: format {card.format!r} v{card.version} is not {FORMAT!r} v{VERSION}")
    return card


def write_state_card(state_dir: str | os.PathLike, card: StateCard) -> Path:
    """Write `state_dir/state.json` atomically (before the state dir's first registry)."""
    return atomic_write_json(Path(state_dir) / STATE_FILE, asdict(card))


def check_state_dir(state_dir: Path, model_dir: Path, card: StateCard) -> None:
    """StateDirError unless `state_dir` holds nothing yet or the state of the base model `card` describes."""
    found = read_state_card(state_dir)
    if found is None:
        if (state_dir / REGISTRY_FILE).is_file():
            raise StateDirError(f"state dir {state_dir} holds a {REGISTRY_FILE} but no {STATE_FILE}: it is not a "
                                "state dir (a model dir?); give an empty or new folder as the state dir")
        return
    if found.base_weights_sha256 != card.base_weights_sha256:
        raise StateDirError(
            f"state dir {state_dir} belongs to another model ({found.model!r}, weights "
            f"{found.base_model_version}, sha256 {found.base_weights_sha256[:16]}...), not to {model_dir} "
            f"({card.base_model_version}, sha256 {card.base_weights_sha256[:16]}...): give this model its own "
            "state dir (or remove that one to start over)")
