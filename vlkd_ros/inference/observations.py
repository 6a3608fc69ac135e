"""Observations for `GraspFeasibility.query` from image files and recorded episodes, and how well a model answers
one name on labelled episodes."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from training.grasp.data import Episode, episode_targets, read_view
from training.grasp.model import binary_counts, f1_score, roc_auc
from vlkd_formats.object_registry import normalize_name

if TYPE_CHECKING:
    from vlkd_ros.inference.grasp import GraspFeasibility


def read_observation(files: Mapping[str, str | os.PathLike], views: list[str]) -> Any:
    """What `query` takes, read from image files per view: the RGB array for RGB-only models, else {view: array}
    of the model's views among `files` (`query` names any that are missing)."""
    if views == ["base_rgb"]:
        return read_view("base_rgb", files["base_rgb"])
    return {v: read_view(v, path) for v, path in files.items() if v in views}


def episode_observation(episode: Episode, views: list[str]) -> Any:
    """What `query` takes for a recorded episode."""
    return read_observation(episode.images, views)


def name_quality(model: "GraspFeasibility", episodes: Sequence[Episode], name: str,
                 batch_size: int = 32) -> dict[str, float]:
    """How well `model` answers `name` on labelled episodes: F1 of 'graspable' at its threshold for `name`, ROC AUC
    of the scores, and the counts behind them."""
    if not episodes:
        raise ValueError(f"no labelled observations to measure {name!r} on")
    truth = episode_targets(list(episodes), [normalize_name(name)])[0][:, 0] > 0.5
    scores: list[float] = []
    for i in range(0, len(episodes), batch_size):
        rows = model.query([episode_observation(e, model.views) for e in episodes[i:i + batch_size]], [name])
        scores += [r[name]["score"] for r in rows]
    score = torch.tensor(scores)
    threshold = model.threshold_for(name)
    counts = binary_counts(score >= threshold, truth)
    return {"f1": f1_score(counts), "auc": roc_auc(score, truth.float()), "threshold": threshold,
            "observations": len(episodes),
            "graspable": int(truth.sum()), **counts}
