"""Deterministic collection plans: the samples (label or objects, split, seed) to render, given the ID/OOD label
split of `vlkd_formats.split`.

Every sample's seed comes from (collection seed, a key, an index) alone, so a sample renders the same image whatever
the worker count, the order of rendering, or how many other samples the collection holds.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from vlkd_formats.split import SPLIT_SALT


@dataclass(frozen=True)
class ClassificationSample:
    """One classification image: its label, its split, its rank within the label, and its render seed."""

    index: int
    label: str
    split: str
    rank: int
    seed: int


@dataclass(frozen=True)
class ClutterEpisode:
    """One clutter scene: which objects it holds, its split and its render seed."""

    index: int
    split: str
    objects: tuple[str, ...]
    seed: int


def sample_seed(seed: int, key: str, index: int) -> int:
    """A 31-bit seed derived from the collection seed, a string key and an index."""
    state = np.random.SeedSequence([seed, zlib.crc32(key.encode()), index]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def classification_plan(split: dict[str, list[str]], labels: list[str], per_class: int, val_fraction: float,
                        seed: int) -> list[ClassificationSample]:
    """`per_class` samples for each label, interleaved across labels; ID labels go to train / val_on_train
    (the last round(per_class * val_fraction) ranks), OOD labels to val."""
    ood = set(split["ood"])
    n_held = round(per_class * val_fraction)
    samples = []
    for rank in range(per_class):
        for label in labels:
            if label in ood:
                part = "val"
            else:
                part = "val_on_train" if rank >= per_class - n_held else "train"
            samples.append(ClassificationSample(len(samples), label, part, rank, sample_seed(seed, label, rank)))
    return samples


def clutter_plan(split: dict[str, list[str]], episodes: int, min_objects: int, max_objects: int,
                 ood_episode_fraction: float, val_fraction: float, seed: int) -> list[ClutterEpisode]:
    """Episodes of min..max distinct objects: X_id scenes hold only ID objects (train or val_on_train), X_ood
    scenes (val, a share `ood_episode_fraction`) hold at least one OOD object."""
    ids, oods = list(split["id"]), list(split["ood"])
    if len(ids) < min_objects:
        raise ValueError(f"min_objects {min_objects} needs at least that many in-distribution labels, "
                         f"but only {len(ids)} are: {ids}")
    plan = []
    for index in range(episodes):
        episode_seed = sample_seed(seed, "clutter", index)
        rng = np.random.default_rng([episode_seed, SPLIT_SALT])
        n = int(rng.integers(min_objects, max_objects + 1))
        if oods and rng.uniform() < ood_episode_fraction:
            n = min(n, len(ids) + len(oods))
            n_ood = int(rng.integers(1, min(n, len(oods)) + 1))
            n_ood = max(n_ood, n - len(ids))
            chosen = list(rng.choice(oods, n_ood, replace=False)) + list(rng.choice(ids, n - n_ood, replace=False))
            part = "val"
        else:
            n = min(n, len(ids))
            chosen = list(rng.choice(ids, n, replace=False))
            part = "val_on_train" if rng.uniform() < val_fraction else "train"
        plan.append(ClutterEpisode(index, part, tuple(str(c) for c in chosen), episode_seed))
    return plan
