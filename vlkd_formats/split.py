"""The ID/OOD label split contract: which labels are in-distribution (Y_id, seen in training) and which are
out-of-distribution (Y_ood, never trained on). One seeded algorithm for every stage: the collectors
(`vlkd collect --split`), `vlkd split`, and a grasp model's `data.split.mode=half`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

SPLIT_SALT = 7919


def split_labels(labels: list[str], mode: str, ood_fraction: float, seed: int) -> dict[str, list[str]]:
    """The {"id", "ood"} label lists: seeded random (`random`), all in-distribution (`none`), or read from a
    YAML/JSON file with `id:` and `ood:` lists (labels in neither are left out of the collection)."""
    if mode == "none":
        return {"id": list(labels), "ood": []}
    if mode == "random":
        if len(labels) < 2:
            raise ValueError(f"an ID/OOD split needs at least 2 labels, got {labels}; use --split none")
        n_ood = min(len(labels) - 1, max(1, round(len(labels) * ood_fraction)))
        ood = set(np.random.default_rng([seed, SPLIT_SALT]).permutation(len(labels))[:n_ood].tolist())
        return {"id": [n for i, n in enumerate(labels) if i not in ood],
                "ood": [n for i, n in enumerate(labels) if i in ood]}
    return read_split_file(mode, labels)


def read_split_file(path: str | os.PathLike, labels: list[str] | None = None) -> dict[str, list[str]]:
    """Read a YAML/JSON split file with `id:` and `ood:` lists of label names (disjoint, `id` non-empty); with
    `labels`, every name must be one of them and the lists come back in `labels` order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"split file {path} cannot be parsed: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), list) or not isinstance(raw.get("ood", []), list):
        raise ValueError(f"split file {path} must hold `id:` and `ood:` lists of label names")
    ids, oods = [str(n) for n in raw["id"]], [str(n) for n in raw.get("ood", [])]
    if labels is not None:
        unknown = [n for n in ids + oods if n not in labels]
        if unknown:
            raise ValueError(f"split file {path} names unknown objects {unknown}; valid names: {', '.join(labels)}")
    both = sorted(set(ids) & set(oods))
    if both:
        raise ValueError(f"split file {path} puts {both} in both id and ood")
    if not ids:
        raise ValueError(f"split file {path} lists no in-distribution (id) labels")
    if labels is None:
        return {"id": ids, "ood": oods}
    return {"id": [n for n in labels if n in ids], "ood": [n for n in labels if n in oods]}
