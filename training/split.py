"""`vlkd split`: a seeded ID/OOD label split (|Y_id| = |Y_ood|) and, optionally, the three-split folder layout."""
from __future__ import annotations

import os
import random
from pathlib import Path

from training.data import IMAGE_SUFFIXES, DatasetError
from vlkd_formats.atomic_io import atomic_write_json


def split_labels(labels: list[str], seed: int = 0) -> dict[str, list[str]]:
    """Shuffle labels with `seed` and halve them: {"id": [...], "ood": [...]} (an odd label out goes to id)."""
    if len(labels) < 2:
        raise DatasetError(f"a label split needs at least 2 labels, got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise DatasetError("labels contain duplicates")
    order = sorted(labels)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return {"id": sorted(order[:len(order) - half]), "ood": sorted(order[len(order) - half:])}


def materialize_split(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                      id_holdout: float = 0.2) -> dict[str, list[str]]:
    """From `source/<label>/*` make `out/{train,val_on_train,val}/<label>/` with symlinks, plus split.json."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetError(f"source dir {source} does not exist")
    labels = sorted(d.name for d in source.iterdir() if d.is_dir())
    split = split_labels(labels, seed)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output dir {out} exists and is not empty")
    rng = random.Random(seed)
    for label in labels:
        images = sorted(p for p in (source / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{source / label} holds no images")
        if label in split["ood"]:
            parts = {"val": images}
        else:
            rng.shuffle(images)
            n_hold = max(1, int(len(images) * id_holdout)) if len(images) > 1 else 0
            parts = {"val_on_train": images[:n_hold], "train": images[n_hold:]}
        for part, files in parts.items():
            folder = out / part / label
            folder.mkdir(parents=True, exist_ok=True)
            for f in files:
                (folder / f.name).symlink_to(f.resolve())
    atomic_write_json(out / "split.json", {"seed": seed, **split})
    return split
