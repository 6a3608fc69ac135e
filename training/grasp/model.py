"""Grasp scoring: the student's image feature against each object's positive/negative prompt features, a
learnt scale and bias, and the decision threshold calibrated on held-out observations."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics
from torch import Tensor, nn
from torch.utils.data import DataLoader

from training.grasp.data import Episode, EpisodeDataset, ObservationTransform
from training.losses import CLIP_TAU
from training.students import Student
from vlkd_runtime.grasp_dir import label_vocabulary
from vlkd_runtime.scoring import MAX_LOG_SCORE, check_detector_features, detector_boxes, detector_embeddings, peak_boxes


class GraspScorer(nn.Module):
    """logit(x, y) = scale * (s(x) . t+(y) - s(x) . t-(y)) + bias; without negatives, scale * s . t+ + bias.
    With scale = 1/tau and bias = 0 this is the paper's two-way softmax over the prompt pair.

    Dense features (B, 1 + L, D) (a dense student: the global embedding, then L locations) add DualCoOp's local
    aggregation: each location's similarity difference, weighted by a softmax over locations of the scaled
    differences, times a learnt `local_weight`, beside the global term."""

    def __init__(self, logit_scale: float = 1 / CLIP_TAU, bias: float = 0.0, local_weight: float | None = None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self.local_weight = None if local_weight is None else nn.Parameter(torch.tensor(float(local_weight)))

    @property
    def scale(self) -> float:
        """Current logit scale."""
        return float(self.log_scale.detach().exp())

    @property
    def local(self) -> float | None:
        """Current weight of the local term (None: a global-feature scorer)."""
        return None if self.local_weight is None else float(self.local_weight.detach())

    def forward(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """Logits (B, N) for features (B, D) or dense (B, 1 + L, D) and prompt features (N, D)."""
        return self._logits(feats, pos, neg)[0]

    @torch.no_grad()
    def score_and_locate(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """`forward`'s logits and, for dense features, where the local term looks for each name (None for global
        ones), from one similarity and one attention: what answering a query needs. The boxes are a CPU tensor
        (B, N, 7) = u, v (the attention peak's cell centre) and x_min, y_min, x_max, y_max (cells holding >= half the
        peak's weight), normalised to [0, 1] of the square input, then the peak's attention weight."""
        logits, attention = self._logits(feats, pos, neg)
        return logits, None if attention is None else _peak_boxes(attention)

    def _logits(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Logits (B, N) and, for dense features, the attention over locations (B, L, N) they weighted."""
        sim = _similarity(feats, pos, neg)
        scale = self.log_scale.exp()
        if feats.ndim == 2:
            return scale * sim + self.bias, None
        if self.local_weight is None:
            raise ValueError("dense features (B, 1 + L, D) need a scorer with local_weight (a dense grasp model)")
        local = sim[:, 1:]  # (B, L, N)
        attention = torch.softmax(scale * local, dim=1)  # over locations
        return scale * (sim[:, 0] + self.local_weight * (attention * local).sum(1)) + self.bias, attention


class DetectorScorer(nn.Module):
    """A detector model's answer (vlkd_runtime.scoring.DetectorScorer, the serving arithmetic): at each location
    log p = log sigmoid(objectness) + log match + log sigmoid(free); the logit of the best location's p. The match
    is sigmoid(s * e . t + b) (what training fits) or, with a `vocabulary` (text features (V, D) of the model's label
    names and their negative prompts' or None; not a parameter, not checkpointed), the softmax of s * e . t against
    the vocabulary's and its own. Features with a distilled embedding (FIELDS + 2D) ensemble its match with the
    text-trained one's, log m = (1 - w) log m_text + w log m_image (w = `image_weight`). Learnt: the match scale s
    and bias b."""

    def __init__(self, match_scale: float = 1 / CLIP_TAU, bias: float = -4.0,
                 vocabulary: tuple[Tensor, Tensor | None] | None = None, image_weight: float = 0.5):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(match_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self.vocabulary = vocabulary
        self.image_weight = image_weight

    @property
    def scale(self) -> float:
        """Current match scale."""
        return float(self.log_scale.detach().exp())

    @property
    def local(self) -> None:
        """A detector has no local-aggregation weight."""
        return None

    def match(self, emb: Tensor, pos: Tensor, neg: Tensor | None = None) -> Tensor:
        """Match logits (..., N) of embeddings (..., D) with queries (N, D)."""
        return self.log_scale.exp() * _similarity(emb, pos, neg) + self.bias

    def log_scores(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """log p per location and name (B, L, N) of detector features (B, L, FIELDS + D)."""
        check_detector_features(feats, pos.shape[-1])
        prior = F.logsigmoid(feats[..., 0]) + F.logsigmoid(feats[..., 1])
        named, distilled = detector_embeddings(feats, pos.shape[-1])
        match = self._log_match(named, pos, neg)
        if distilled is not None:  # ViLD's ensemble with the distilled embedding
            w = self.image_weight
            match = (1 - w) * match + w * self._log_match(distilled, pos, neg)
        return prior[..., None] + match

    def _log_match(self, emb: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """log m per location and name (..., N) of embeddings (..., D)."""
        if self.vocabulary is None:
            return F.logsigmoid(self.match(emb, pos, neg))
        vpos, vneg = (None if v is None else v.to(emb) for v in self.vocabulary)
        z = self.log_scale.exp() * _similarity(emb, pos, neg)
        known = torch.logsumexp(self.log_scale.exp() * _similarity(emb, vpos, vneg), -1, keepdim=True)
        return z - torch.logaddexp(known, z)

    def forward(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """Logits (B, N) of the best location per name."""
        return _log_odds(self.log_scores(feats, pos, neg).max(1).values)

    @torch.no_grad()
    def score_and_locate(self, feats: Tensor, pos: Tensor, neg: Tensor | None) -> tuple[Tensor, Tensor]:
        """Logits (B, N) and each name's box (B, N, 7) as `vlkd_runtime.scoring.DetectorScorer` gives them."""
        lp = self.log_scores(feats, pos, neg)
        best, cell = lp.max(1)
        best = best.clamp(max=MAX_LOG_SCORE)
        boxes = detector_boxes(feats.detach().float().cpu().numpy(), best.cpu().numpy(), cell.cpu().numpy())
        return _log_odds(best), torch.from_numpy(boxes)


def vocabulary_tensors(text_features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """`vlkd_runtime.grasp_dir.label_vocabulary` of a model's text features given as tensors (CPU), as tensors."""
    pos, neg = label_vocabulary({k: v.detach().cpu().numpy() for k, v in text_features.items()})
    return torch.from_numpy(pos), None if neg is None else torch.from_numpy(neg)


def build_scorer(head: str, logit_scale: float, logit_bias: float, local_weight: float | None,
                 vocabulary: tuple[Tensor, Tensor | None] | None = None, image_weight: float = 0.5
                 ) -> "GraspScorer | DetectorScorer":
    """The scorer of a grasp card: a detector's (matching names against `vocabulary` if given, weighing a distilled
    embedding's match by `image_weight`), or the embedding head's (global, or dense with local_weight)."""
    if head == "detector":
        return DetectorScorer(logit_scale, logit_bias, vocabulary, image_weight)
    return GraspScorer(logit_scale, logit_bias, local_weight)


def _peak_boxes(attention: Tensor) -> Tensor:
    """`GraspScorer.score_and_locate`'s boxes (B, N, 7) from the attention over a square map of locations (B, L, N):
    vlkd_runtime.scoring.peak_boxes, the serving arithmetic, on a torch tensor."""
    return torch.from_numpy(peak_boxes(attention.detach().float().cpu().numpy()))


def _log_odds(log_p: Tensor) -> Tensor:
    """The logit of p from log p, with log p clipped to MAX_LOG_SCORE so that it stays finite."""
    log_p = log_p.clamp(max=MAX_LOG_SCORE)
    return log_p - torch.log(-torch.expm1(log_p))


def _similarity(feats: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
    """feats @ pos.T (minus feats @ neg.T) over the last dim: (..., N)."""
    sim = feats @ pos.T
    return sim if neg is None else sim - feats @ neg.T


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
    """tp, fp, fn, tn of boolean predictions against boolean targets over the masked entries (scikit-learn's
    confusion matrix)."""
    keep = None if mask is None else mask.bool().flatten().numpy()
    t, p = target.bool().flatten().numpy(), pred.bool().flatten().numpy()
    if keep is not None:
        t, p = t[keep], p[keep]
    tn, fp, fn, tp = (int(v) for v in metrics.confusion_matrix(t, p, labels=[False, True]).ravel())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def f1_score(counts: dict[str, int]) -> float:
    """F1 of the positive class (NaN when there are no positives and no positive predictions)."""
    denom = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    return 2 * counts["tp"] / denom if denom else float("nan")


def accuracy_score(counts: dict[str, int]) -> float:
    """Fraction of correct decisions (NaN for no entries)."""
    total = sum(counts.values())
    return (counts["tp"] + counts["tn"]) / total if total else float("nan")


def roc_auc(scores: Tensor, targets: Tensor) -> float:
    """Area under the ROC curve over all pairs (scikit-learn; NaN without both positives and negatives)."""
    t = (targets.flatten() > 0.5).numpy()
    if t.all() or not t.any():
        return float("nan")
    return float(metrics.roc_auc_score(t, scores.flatten().double().numpy()))


def calibrate_threshold(scores: Tensor, targets: Tensor, metric: str = "f1") -> tuple[float, float]:
    """Threshold on sigmoid scores maximising `metric` ('f1' or 'accuracy') over all pairs: (threshold, value).
    Candidates lie midway between distinct scores (scikit-learn's ROC curve at every distinct score); ties prefer
    the one nearest 0.5."""
    if metric not in ("f1", "accuracy"):
        raise ValueError(f"calibration metric must be 'f1' or 'accuracy', got {metric!r}")
    s, t = scores.flatten().double().numpy(), (targets.flatten() > 0.5).numpy()
    if s.size == 0:
        return 0.5, float("nan")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos and n_neg:
        fpr, tpr, cuts = metrics.roc_curve(t, s, drop_intermediate=False)
        tp, fp = tpr * n_pos, fpr * n_neg
    else:  # one class only: predicting the top i positive, cuts at each distinct score
        cuts = np.concatenate([[np.inf], np.unique(s)[::-1]])
        above = (s[None, :] >= cuts[:, None]).sum(1)
        tp, fp = (above, np.zeros_like(above)) if n_pos else (np.zeros_like(above), above)
    fn, tn = n_pos - tp, n_neg - fp
    values = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12) if metric == "f1" else (tp + tn) / s.size
    # cut i predicts "graspable" for scores >= cuts[i] (cuts[0] = inf: none); its threshold sits midway between
    # that score (1 for cut 0) and the next lower distinct one (just below 0 after the last)
    upper = np.concatenate([[1.0 + 1e-6], cuts[1:]])
    lower = np.concatenate([cuts[1:], [-1e-6]])
    thresholds = (upper + lower) / 2
    best = values.max()
    candidates = np.flatnonzero(values >= best - 1e-12)
    pick = candidates[np.argmin(np.abs(thresholds[candidates] - 0.5))]
    return float(np.clip(thresholds[pick], 0.0, 1.0)), float(best)
