"""Grasp scoring: the student's image feature against each object's positive/negative prompt features, a
learnt scale and bias, and the decision threshold calibrated on held-out observations."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from training.grasp.data import Episode, EpisodeDataset, ObservationTransform
from training.losses import CLIP_TAU
from training.students import Student


class GraspScorer(nn.Module):
    """logit(x, y) = scale * (s(x) . t+(y) - s(x) . t-(y)) + bias; without negatives, scale * s . t+ + bias.
    With scale = 1/tau and bias = 0 this is the paper's two-way softmax over the prompt pair."""

    def __init__(self, logit_scale: float = 1 / CLIP_TAU, bias: float = 0.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    @property
    def scale(self) -> float:
        """Current logit scale."""
        return float(self.log_scale.detach().exp())

    def forward(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """Logits (B, N) for features (B, D) and prompt features (N, D)."""
        sim = feats @ pos.T
        if neg is not None:
            sim = sim - feats @ neg.T
        return self.log_scale.exp() * sim + self.bias


@torch.no_grad()
def score_inputs(student: Student, scorer: GraspScorer, inputs: Tensor, pos: Tensor, neg: Tensor | None,
                 batch_size: int = 64, device: str | torch.device = "cpu") -> Tensor:
    """Sigmoid scores (N, M) of transformed observations against M objects' prompt features."""
    student.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        feats = student(inputs[i:i + batch_size].to(device))
        out.append(torch.sigmoid(scorer(feats, pos.to(device), None if neg is None else neg.to(device))).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(pos))


@torch.no_grad()
def score_episodes(student: Student, scorer: GraspScorer, episodes: list[Episode], transform: ObservationTransform,
                   pos: Tensor, neg: Tensor | None, batch_size: int = 64, device: str | torch.device = "cpu",
                   num_workers: int = 0) -> Tensor:
    """Sigmoid scores (N, M) of episodes read from disk, batched."""
    loader = DataLoader(EpisodeDataset(episodes, transform), batch_size=batch_size, num_workers=num_workers)
    out = [score_inputs(student, scorer, x, pos, neg, batch_size, device) for x, _ in loader]
    return torch.cat(out) if out else torch.zeros(0, len(pos))


def binary_counts(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, int]:
    """tp, fp, fn, tn of boolean predictions against boolean targets over the masked entries."""
    pred, target = pred.bool(), target.bool()
    mask = torch.ones_like(pred) if mask is None else mask.bool()
    return {"tp": int((pred & target & mask).sum()), "fp": int((pred & ~target & mask).sum()),
            "fn": int((~pred & target & mask).sum()), "tn": int((~pred & ~target & mask).sum())}


def f1_score(counts: dict[str, int]) -> float:
    """F1 of the positive class (NaN when there are no positives and no positive predictions)."""
    denom = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    return 2 * counts["tp"] / denom if denom else float("nan")


def accuracy_score(counts: dict[str, int]) -> float:
    """Fraction of correct decisions (NaN for no entries)."""
    total = sum(counts.values())
    return (counts["tp"] + counts["tn"]) / total if total else float("nan")


def roc_auc(scores: Tensor, targets: Tensor) -> float:
    """Area under the ROC curve over all pairs (NaN without both positives and negatives); ties count half."""
    s, t = scores.flatten().double(), targets.flatten() > 0.5
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for value in torch.unique(s[order][1:][s[order][1:] == s[order][:-1]]):  # average ranks of ties
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibrate_threshold(scores: Tensor, targets: Tensor, metric: str = "f1") -> tuple[float, float]:
    """Threshold on sigmoid scores maximising `metric` ('f1' or 'accuracy') over all pairs: (threshold, value).
    Thresholds lie midway between distinct sorted scores; ties prefer the one nearest 0.5."""
    if metric not in ("f1", "accuracy"):
        raise ValueError(f"calibration metric must be 'f1' or 'accuracy', got {metric!r}")
    s, t = scores.flatten().double(), targets.flatten().double()
    if s.numel() == 0:
        return 0.5, float("nan")
    order = torch.argsort(s, descending=True)
    s, t = s[order], t[order]
    # Predicting the top i as positive, i = 0..n; only cuts between distinct scores are realisable.
    tp = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])
    i = torch.arange(len(s) + 1, dtype=torch.float64)
    fp, pos = i - tp, t.sum()
    fn, tn = pos - tp, len(s) - pos - fp
    values = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12) if metric == "f1" else (tp + tn) / len(s)
    upper = torch.cat([torch.tensor([1.0 + 1e-6], dtype=torch.float64), s])
    lower = torch.cat([s, torch.tensor([-1e-6], dtype=torch.float64)])
    cuts = (upper + lower) / 2
    valid = upper > lower
    values = torch.where(valid, values, torch.full_like(values, -1.0))
    best = values.max()
    candidates = torch.nonzero(values >= best - 1e-12).flatten()
    pick = candidates[torch.argmin((cuts[candidates] - 0.5).abs())]
    return float(cuts[pick].clamp(0.0, 1.0)), float(best)
