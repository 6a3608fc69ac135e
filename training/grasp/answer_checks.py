"""What a user sees beyond the score: whether a right "yes" points at the object (its u, v inside the object's
visible box, +2 px), and how often the model says "yes" to names that are not in the frame (absent objects of the
dataset, and words from other domains)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from training.grasp.data import Episode, EpisodeDataset, ObservationTransform, episode_targets
from vlkd_formats.image_codec import read_rgb
from vlkd_runtime.observation import input_to_frame

HIT_MARGIN_PX = 2  # a location this close to the object's visible box still points at it
# 20 names no dataset of ours holds: a "yes" to any of them is wrong on every frame
OTHER_DOMAIN_NAMES = ("giraffe", "laptop", "piano", "elephant", "bicycle", "airplane", "sofa", "refrigerator",
                      "television", "horse", "umbrella", "skateboard", "traffic light", "toilet", "bed", "motorcycle",
                      "zebra", "microwave", "keyboard", "bus")


@dataclass
class Answers:
    """Scores (N, M) of N frames for M names and, for a model that locates, the boxes (N, M, 7) of
    `score_and_locate` (u, v, box, probability in [0, 1] of the square input); None for a global model."""

    scores: Tensor
    boxes: Tensor | None


@torch.no_grad()
def answer_frames(student: torch.nn.Module, scorer: torch.nn.Module, episodes: list[Episode],
                  transform: ObservationTransform, pos: Tensor, neg: Tensor | None, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> Answers:
    """Scores and locations of every episode for every query, as a served answer gives them."""
    student.eval()
    scores, boxes = [], []
    loader = DataLoader(EpisodeDataset(episodes, transform), batch_size=batch_size)
    pos, neg = pos.to(device), None if neg is None else neg.to(device)
    for x, _ in loader:
        logits, where = scorer.score_and_locate(student(x.to(device)), pos, neg)
        scores.append(torch.sigmoid(logits).cpu())
        boxes.append(where)
    if not scores:
        return Answers(torch.zeros(0, len(pos)), None)
    return Answers(torch.cat(scores), None if boxes[0] is None else torch.cat(boxes))


def points_inside(episode: Episode, name: str, uv: Tensor, frame: tuple[int, int]) -> bool:
    """True when u, v (in [0, 1] of the square input) falls inside `name`'s visible box of the base view (of
    height, width `frame`), grown by HIT_MARGIN_PX, once mapped back to frame pixels as the node maps it
    (`input_to_frame`)."""
    bbox = episode.objects[name].bbox
    if bbox is None:
        return False
    x, y = input_to_frame(float(uv[0]), float(uv[1]), frame[1], frame[0])
    x0, y0, x1, y1 = bbox  # inclusive pixels: the box spans [x0, x1 + 1)
    return x0 - HIT_MARGIN_PX <= x <= x1 + 1 + HIT_MARGIN_PX and y0 - HIT_MARGIN_PX <= y <= y1 + 1 + HIT_MARGIN_PX


def answer_checks(answers: Answers, episodes: list[Episode], names: list[str], threshold: float | Tensor
                  ) -> dict[str, float]:
    """For the pairs of `episodes` x `names` (answers' columns) at `threshold` (one, or one per name (1, M)): the
    share of right "yes" whose location points at the object (`hit`; NaN for a model without locations) and the
    share of "yes" among names absent from the frame (`absent_false_yes`), each with its count."""
    graspable, present = episode_targets(episodes, names)
    yes = answers.scores >= threshold
    right = yes & (graspable > 0.5)
    nan = float("nan")
    out: dict[str, float] = {"right_yes": int(right.sum()), "hit": nan}
    if answers.boxes is not None and right.any():
        pairs = right.nonzero().tolist()
        frames = {i: read_rgb(episodes[i].images["base_rgb"]).shape[:2] for i in {i for i, _ in pairs}}
        hits = [points_inside(episodes[i], names[j], answers.boxes[i, j, :2], frames[i])
                for i, j in pairs]
        out["hit"] = float(np.mean(hits))
    absent = ~present
    out["absent_pairs"] = int(absent.sum())
    out["absent_false_yes"] = float(yes[absent].float().mean()) if absent.any() else nan
    return out


def false_yes(scores: Tensor, threshold: float) -> dict[str, float]:
    """The share of "yes" among answers that must all be "no" (names from other domains), with its count."""
    return {"pairs": int(scores.numel()),
            "false_yes": float((scores >= threshold).float().mean()) if scores.numel() else float("nan")}
