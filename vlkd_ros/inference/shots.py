"""What a few-shot image must be before a job may start: a camera view of something (not a flat frame, not noise,
not a thumbnail), and different enough from the other shots that k shots are k views. numpy only: the ROS
node's frame jobs use the same rules to collect distinct camera frames.

The rules, with `ShotRules` defaults (uint8 RGB, values 0-255):
  - too small: the shorter side is under `min_side` pixels;
  - near-uniform: the standard deviation of the frame's pixel values is under `min_std` (a flat grey frame: 0;
    a white object on a white table still shows edges and shading well above it);
  - noise: the correlation of horizontally neighbouring pixel values is under `min_neighbour_corr` (camera images
    of the world: 0.38 and up, median 0.77, over 1,280 rendered 96 px clutter frames; independent per-pixel noise:
    within 0.02 of 0);
  - near-duplicate: the mean absolute difference of two frames' `thumb` x `thumb` area-averaged thumbnails is
    under `min_change` (a static camera's successive frames differ by sensor noise only, well under 1; moving an
    object or the camera by a few centimetres changes a region of the thumbnail by tens of levels).
A refused frame refuses the whole shot list (the reason names the frame); near-duplicates are dropped, and
`select_shots` then needs `k` distinct frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vlkd_formats.errors import VlkdError

MIN_SHOTS = 2  # one to learn from, one held out to judge what was learnt (leave-one-out, `GraspFeasibility`)


class ShotError(VlkdError, ValueError):
    """The shots cannot start a few-shot job; the message says which and why."""


@dataclass(frozen=True)
class ShotRules:
    """Thresholds of the shot checks (see the module doc)."""

    min_side: int = 16
    min_std: float = 4.0
    min_neighbour_corr: float = 0.2
    min_change: float = 3.0
    thumb: int = 32


@dataclass
class ShotSelection:
    """Which of the given frames start the job: `kept` (distinct usable frames, in order), `duplicates` (index ->
    the kept index it repeats) and `refused` (index -> why it is no camera view)."""

    kept: list[int] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


def base_rgb(observation: Any) -> np.ndarray | None:
    """The colour view of an observation (an RGB array, or the `base_rgb` entry of a dict of views); None if it has
    none that is an HxWx3 uint8 array (the model's own input checks say what is wrong with it)."""
    rgb = observation.get("base_rgb") if isinstance(observation, Mapping) else observation
    if isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8:
        return rgb
    return None


def frame_problem(rgb: np.ndarray, rules: ShotRules = ShotRules()) -> str | None:
    """Why `rgb` (HxWx3 uint8) cannot be a shot, as a phrase ("is near-uniform (...)"), or None when it can."""
    h, w = rgb.shape[:2]
    if min(h, w) < rules.min_side:
        return f"is {w}x{h} pixels, too small for a view of an object (shots need {rules.min_side} or more a side)"
    sample = _sample(rgb)
    std = float(sample.std())
    if std < rules.min_std:
        return (f"is near-uniform (pixel values vary by {std:.1f}, under {rules.min_std:g}): a flat frame shows no "
                "object")
    corr = neighbour_correlation(sample)
    if corr < rules.min_neighbour_corr:
        return (f"looks like noise, not a camera image (neighbouring pixels correlate {corr:.2f}, under "
                f"{rules.min_neighbour_corr:g})")
    return None


def neighbour_correlation(rgb: np.ndarray) -> float:
    """Pearson correlation of horizontally adjacent pixel values, the three channels pooled (each centred on its own
    mean, so an object of the background's brightness but another colour counts): ~1 for camera images of the
    world, ~0 for independent per-pixel noise."""
    x = rgb.astype(np.float32)
    x = x - x.mean(axis=(0, 1), keepdims=True)
    a, b = x[:, :-1].ravel(), x[:, 1:].ravel()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 1.0


def thumbnail(rgb: np.ndarray, side: int = 32) -> np.ndarray:
    """An area-averaged side x side x 3 float32 thumbnail of any HxWx3 frame (what near-duplicates are judged on)."""
    x = rgb.astype(np.float32)
    for axis in (0, 1):
        n = x.shape[axis]
        starts = (np.arange(side) * n) // side
        counts = np.diff(np.append(starts, n)).clip(min=1)
        shape = [1, 1, 1]
        shape[axis] = side
        x = np.add.reduceat(x, starts, axis=axis) / counts.reshape(shape).astype(np.float32)
    return x.astype(np.float32, copy=False)


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0-255) of two thumbnails."""
    return float(np.abs(a - b).mean())


def select_shots(frames: Sequence[np.ndarray], rules: ShotRules = ShotRules()) -> ShotSelection:
    """Check every frame and drop near-duplicates (a frame is kept when it differs from every frame kept before)."""
    out = ShotSelection()
    thumbs: list[np.ndarray] = []
    for i, rgb in enumerate(frames):
        problem = frame_problem(rgb, rules)
        if problem is not None:
            out.refused[i] = problem
            continue
        thumb = thumbnail(rgb, rules.thumb)
        twin = next((j for j, t in zip(out.kept, thumbs) if change(thumb, t) < rules.min_change), None)
        if twin is None:
            out.kept.append(i)
            thumbs.append(thumb)
        else:
            out.duplicates[i] = twin
    return out


def check_shots(frames: Sequence[np.ndarray], k: int, rules: ShotRules = ShotRules(), what: str = "images"
                ) -> ShotSelection:
    """`select_shots`, raising ShotError when a frame is refused or fewer than `k` distinct frames remain."""
    sel = select_shots(frames, rules)
    if sel.refused:
        i, why = next(iter(sel.refused.items()))
        more = f" (and {len(sel.refused) - 1} more refused)" if len(sel.refused) > 1 else ""
        raise ShotError(f"{what}[{i}] {why}{more}; no few-shot job was started")
    if len(sel.kept) < k and not sel.duplicates:
        raise ShotError(f"{len(frames)} shots given; at least {k} distinct views are needed")
    if len(sel.kept) < k:
        repeats = ", ".join(f"{what}[{i}] repeats {what}[{j}]" for i, j in list(sel.duplicates.items())[:4])
        raise ShotError(f"only {len(sel.kept)} of the {len(frames)} shots are distinct views ({repeats}"
                        f"{', ...' if len(sel.duplicates) > 4 else ''}); at least {k} are needed: move the object or "
                        "the camera between shots")
    return sel


def _sample(rgb: np.ndarray, rows: int = 512) -> np.ndarray:
    """At most `rows` evenly spaced full rows of a large frame (the checks' statistics, at a bounded cost)."""
    step = max(1, rgb.shape[0] // rows)
    return rgb[::step]
