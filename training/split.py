"""`vlkd split`: the seeded ID/OOD label split of `vlkd_formats.split` (half the labels out of distribution) as the
three-split folder layout."""
from __future__ import annotations

import os
import random
from pathlib import Path

from training.data import DatasetError
from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.image_codec import is_image_file
from vlkd_formats.split import split_labels

OOD_FRACTION = 0.5


def materialize_split(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                      id_holdout: float = 0.2) -> dict[str, list[str]]:
    """From `source/<label>/*` make `out/{train,val_on_train,val}/<label>/` with symlinks, plus split.json."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetError(f"source dir {source} does not exist")
    labels = sorted(d.name for d in source.iterdir() if d.is_dir())
    if len(labels) < 2:
        raise DatasetError(f"a label split needs at least 2 labels, got {len(labels)}")
    split = split_labels(labels, "random", OOD_FRACTION, seed)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output dir {out} exists and is not empty")
    rng = random.Random(seed)
    for label in labels:
        images = sorted(p for p in (source / label).iterdir() if is_image_file(p))
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
