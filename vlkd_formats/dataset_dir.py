"""The dataset-dir format: what `sim/` writes and `training/` reads (version 1).

Layout of a dataset dir:

    dataset.json        DatasetInfo: format, version, kind, labels, descriptions, split, settings
    manifest.jsonl      one JSON object per finished sample (appended atomically, line by line)
    train/<label>/      classification images of Y_id (ImageFolder layout, as in the anchor repo)
    val_on_train/<label>/  held-out images of Y_id (X_id)
    val/<label>/        images of Y_ood (X_ood)

A classification manifest row has at least {"image": relative path, "label": name, "split": split name}.
A clutter dataset (kind "clutter") keeps its observations under `episodes/`; each manifest row has
{"episode", "split", "images": {view: relative path}, "objects": [{"name", "present", "visible_fraction",
"graspable"}]}. Rows written by sim/ since multi-view collection also have (older datasets lack them; readers must
not need them): "scene" (the scene's plan index; the base-camera views of one settled scene share it, their
"split" and "seed"), "view" (0..views_per_scene-1), "camera" {"eye", "target", "fov_deg"} (the base camera, world
frame, metres), "lighting" (only with random lighting), images "base_seg" and "hand_seg" (8-bit PNG, pixel k in
1..N = the row's k-th `objects` entry, 0 = table, robot, background) and per object "visible_pixels", "bbox"
([x_min, y_min, x_max, y_max] of its visible base-image pixels, inclusive; null when unseen) and
"supports_other". "visible_fraction", "visible_pixels", "bbox" and "graspable" are measured in that row's view.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError

FORMAT = "vlkd-dataset"
VERSION = 1
KINDS = ("classification", "clutter")
SPLITS = ("train", "val_on_train", "val")
INFO_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
# Views of one clutter episode, each a PNG `episodes/<episode>/<view>.png` (depth: 16-bit, millimetres).
EPISODE_VIEWS = ("base_rgb", "base_depth", "hand_rgb", "hand_depth")


def label_slug(label: str) -> str:
    """Folder name of a label (`train/<slug>/`): spaces become underscores ("coffee mug" -> "coffee_mug")."""
    return label.replace(" ", "_")


def slug_label(slug: str) -> str:
    """Label of a folder name (inverse of label_slug for labels without underscores)."""
    return slug.replace("_", " ")


def episode_view_path(episode_dir: str | os.PathLike, view: str) -> Path:
    """The file of one view (one of EPISODE_VIEWS) in a clutter episode folder."""
    if view not in EPISODE_VIEWS:
        raise DatasetFormatError(f"view {view!r} is not one of {EPISODE_VIEWS}")
    return Path(episode_dir) / f"{view}.png"


class DatasetFormatError(VlkdError, ValueError):
    """A dataset dir is missing, incomplete or of an unknown format/version."""


@dataclass
class DatasetInfo:
    """Metadata of a dataset dir (`dataset.json`)."""

    kind: str
    labels: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=lambda: {"id": [], "ood": []})
    settings: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def validate(self) -> "DatasetInfo":
        """Raise DatasetFormatError naming the first inconsistency; return self when valid."""
        if self.format != FORMAT:
            raise DatasetFormatError(f"format is {self.format!r}, expected {FORMAT!r}")
        if self.version != VERSION:
            raise DatasetFormatError(f"dataset version {self.version} is not supported (this code reads {VERSION})")
        if self.kind not in KINDS:
            raise DatasetFormatError(f"kind {self.kind!r} is not one of {KINDS}")
        if not self.labels:
            raise DatasetFormatError("dataset has no labels")
        if len(set(self.labels)) != len(self.labels):
            raise DatasetFormatError("dataset labels contain duplicates")
        known = set(self.labels)
        unknown = [n for n in self.descriptions if n not in known]
        if unknown:
            raise DatasetFormatError(f"descriptions name unknown labels {unknown[:5]}; "
                                     f"labels are {self.labels[:10]}...")
        for part in ("id", "ood"):
            bad = [n for n in self.split.get(part, []) if n not in known]
            if bad:
                raise DatasetFormatError(f"split[{part!r}] names unknown labels {bad[:5]}")
        overlap = set(self.split.get("id", [])) & set(self.split.get("ood", []))
        if overlap:
            raise DatasetFormatError(f"labels {sorted(overlap)[:5]} are both in-distribution and OOD")
        return self


def write_dataset_info(root: str | os.PathLike, info: DatasetInfo) -> Path:
    """Validate `info` and write it atomically to `root/dataset.json`."""
    return atomic_write_json(Path(root) / INFO_FILE, asdict(info.validate()))


def read_dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """Read and validate `root/dataset.json`."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{path} not found: {root} is not a vlkd dataset dir")
    try:
        raw = json.loads(path.read_text())
        return DatasetInfo(**raw).validate()
    except (json.JSONDecodeError, TypeError) as err:
        raise DatasetFormatError(f"{path} is not a valid dataset.json: {err}") from err


class ManifestWriter:
    """Appends one JSON line per finished sample; each line is flushed and fsynced before it counts."""

    def __init__(self, root: str | os.PathLike, name: str = MANIFEST_FILE):
        self.path = Path(root) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_partial_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        """Write `row` as one complete line (after its files are on disk)."""
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the manifest file."""
        self._file.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(root: str | os.PathLike, name: str = MANIFEST_FILE) -> Iterator[dict[str, Any]]:
    """Yield the manifest's complete rows; a torn last line (a crash mid-write) is ignored."""
    path = Path(root) / name
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            yield json.loads(line)


def _truncate_partial_last_line(path: Path) -> None:
    """Cut a torn trailing line left by a crash so appends start on a line boundary."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with open(path, "rb+") as f:
        f.truncate(data.rfind(b"\n") + 1)
