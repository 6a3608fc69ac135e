"""A new object as a new query vector, not new weights (in the spirit of OWL-ViT's image-conditioned queries,
CoOp's learnt prompts and Tip-Adapter): from the student's embeddings of a few shots, fit the object's query
vector (with the name's zero-shot text direction as its prior), its own scale, bias and threshold. The student's
weights never change, so every other object's answers stay bit-identical by construction. numpy + scipy (imported
by the fits, not at import: an idle serving process does not load it).

The model scores a name's query vector q on a frame as raw(q) = s * (g . q + w * sum_l a_l(q) x_l . q) + c (the
scorer's global term and its attention over locations); a zero-shot name's q is its text direction t+ - t-. The
fit here works on rows (a shot's object region and its global embedding are positives; every location and the
global embedding of frames without the object are negatives) with the linear logit s * x . q + c0, then the
caller scores the fitted q through the real scorer and `calibrate` maps raw(q) onto its own sigmoid scale. A
detector model's q is its match query: the positives are each shot's embedding where the detector finds the object,
the negatives the embeddings at the most object-like locations of frames without it (what an answer could pick).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vlkd_runtime.scoring import sigmoid

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalised to [0, 1] of the square input
DETECTOR_NEGATIVES = 8  # locations per frame without the object that a detector's query is fitted against


@dataclass(frozen=True)
class QueryFitConfig:
    """How a query vector is fitted and judged: a prior weight pulls it towards the name's text direction
    (relative to the data term; inf: the text direction itself, only its scale and bias fitted); `validation` of
    the frames without the object are kept out of every fit to judge it: each shot, scored by a query fitted on
    the other shots (leave-one-out), must outrank those frames, with ROC AUC >= `min_heldout_auc` on average, at
    the one of `prior_weights` that does best there (ties: the larger); the object's threshold is the score it
    exceeds on `object_fpr` of the frames without it."""

    prior_weights: tuple[float, ...] = (math.inf, 3.0, 1.0, 0.3, 0.1)
    validation: float = 0.5
    min_heldout_auc: float = 0.75
    object_fpr: float = 0.05

    def validate(self) -> None:
        """Check ranges."""
        if not self.prior_weights or any(not w >= 0 for w in self.prior_weights):
            raise ValueError(f"prior_weights must be numbers >= 0 (inf: the text direction), got {self.prior_weights}")
        for name in ("validation", "object_fpr"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not 0 <= self.min_heldout_auc <= 1:
            raise ValueError(f"min_heldout_auc must be in [0, 1], got {self.min_heldout_auc}")


def grid_side(features: np.ndarray) -> int:
    """Side of the square location map of dense features (N, 1 + L, D); 0 for global ones (N, D)."""
    if features.ndim == 2:
        return 0
    side = math.isqrt(features.shape[1] - 1)
    if side * side != features.shape[1] - 1:
        raise ValueError(f"dense features need a square map of locations, got {features.shape[1] - 1}")
    return side


def shot_regions(features: np.ndarray, rois: Sequence[Box | None], direction: np.ndarray
                 ) -> tuple[np.ndarray, list[str]]:
    """Each shot's object embedding (N, D) and where it came from: for dense features (N, 1 + L, D) the mean of the
    locations whose cells overlap the shot's region of interest (the cell under its centre at least), or without
    one the location `direction` (the name's zero-shot query) scores highest, where the model locates it best;
    global features (N, D) are their own region."""
    side = grid_side(features)
    if not side:
        return features.astype(np.float32), ["whole image"] * len(features)
    cells = features[:, 1:]
    out, said = [], []
    for i, roi in enumerate(rois):
        if roi is None:
            best = int(np.argmax(cells[i] @ direction))
            out.append(cells[i, best])
            said.append(f"cell ({best % side}, {best // side}) of {side}x{side}, where the name scores highest")
        else:
            picked = roi_cells(roi, side)
            out.append(cells[i, picked].mean(0))
            said.append(f"{len(picked)} cell(s) of {side}x{side} under the region of interest")
    return np.stack(out).astype(np.float32), said


def detector_shot_regions(features: np.ndarray, rois: Sequence[Box | None], log_scores: np.ndarray, dim: int
                          ) -> tuple[np.ndarray, list[str]]:
    """Each shot's object embedding (N, dim) from detector features (N, L, FIELDS + D) and where it came from: the
    location where the detector finds the object, i.e. of highest objectness among the cells under the shot's
    region of interest, or without one where the name's zero-shot answer peaks (`log_scores` (N, L) of it). The
    embedding is the last `dim` channels: the distilled one of a model that has one (FIELDS + 2 dim), like the
    image-conditioned queries of OWL-ViT."""
    side = math.isqrt(features.shape[1])
    out, said = [], []
    for i, roi in enumerate(rois):
        if roi is None:
            best = int(np.argmax(log_scores[i]))
            said.append(f"cell ({best % side}, {best // side}) of {side}x{side}, where the name's answer peaks")
        else:
            picked = roi_cells(roi, side)
            best = picked[int(np.argmax(features[i, picked, 0]))]
            said.append(f"cell ({best % side}, {best // side}) of {side}x{side}, the most object-like under the "
                        "region of interest")
        out.append(features[i, best, -dim:])
    return np.stack(out).astype(np.float32), said


def roi_cells(roi: Box, side: int) -> list[int]:
    """Indices of the cells of a side x side grid that overlap `roi` (normalised x0, y0, x1, y1), the one under its
    centre first; ValueError when it is not a box inside the unit square with a positive area."""
    x0, y0, x1, y1 = (float(v) for v in roi)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"a region of interest must lie inside the model's input with a positive area, got "
                         f"({x0:.3f}, {y0:.3f}, {x1:.3f}, {y1:.3f}) of it")
    cx, cy = min(int((x0 + x1) / 2 * side), side - 1), min(int((y0 + y1) / 2 * side), side - 1)
    cols = range(min(int(x0 * side), side - 1), max(math.ceil(x1 * side), 1))
    rows = range(min(int(y0 * side), side - 1), max(math.ceil(y1 * side), 1))
    centre = cy * side + cx
    return [centre] + [r * side + c for r in rows for c in cols if r * side + c != centre]


def negative_rows(features: np.ndarray) -> np.ndarray:
    """Every embedding of frames without the object (N, D) or (N, 1 + L, D): the global one and each location's."""
    return features.reshape(-1, features.shape[-1]).astype(np.float32)


def detector_negative_rows(features: np.ndarray, dim: int, per_frame: int = DETECTOR_NEGATIVES) -> np.ndarray:
    """The embeddings an answer could pick on detector features (N, L, FIELDS + D) of frames without the object:
    each frame's `per_frame` most object-like locations (objectness + free to grasp), (N * per_frame, dim): the last
    `dim` channels, as `detector_shot_regions` reads them."""
    rows = most_object_like(features, per_frame)[..., -dim:]
    return rows.reshape(-1, rows.shape[-1]).astype(np.float32)


def most_object_like(features: np.ndarray, keep: int) -> np.ndarray:
    """Detector features (N, L, FIELDS + D) cut to each frame's `keep` most object-like locations (objectness +
    free to grasp), most object-like first (ties: in location order), (N, min(keep, L), FIELDS + D): their
    `detector_negative_rows` (per_frame <= keep) are the full features', and so is an answer on them wherever the
    best location is among them."""
    prior = features[..., 0] + features[..., 1]
    top = np.argsort(-prior, axis=1, kind="stable")[:, :keep]
    return np.take_along_axis(features, top[..., None], 1)


def fit_query(positives: np.ndarray, negatives: np.ndarray, prior: np.ndarray, scale: float,
              prior_weight: float) -> np.ndarray:
    """The query vector q (D,) minimising the class-balanced logistic loss of s * x . q + c0 (positives (P, D) are
    the object, negatives (Q, D) are not) plus prior_weight * |q - prior|^2 / |prior|^2; starts at `prior`
    (L-BFGS, deterministic)."""
    if not len(positives) or not len(negatives):
        raise ValueError(f"fitting a query needs positives and negatives, got {len(positives)} and {len(negatives)}")
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    w = np.where(y > 0, 0.5 / len(positives), 0.5 / len(negatives))
    q0 = prior.astype(np.float64)
    norm = max(float(q0 @ q0), 1e-12)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        q, c = params[:-1], params[-1]
        z = scale * (x @ q) + c
        # log(1 + e^z) - y z, stably; its derivative is sigmoid(z) - y
        value = float(w @ (np.logaddexp(0.0, z) - y * z))
        g = w * (sigmoid(z) - y)
        d = q - q0
        value += prior_weight * float(d @ d) / norm
        grad_q = scale * (x.T @ g) + 2 * prior_weight * d / norm
        return value, np.concatenate([grad_q, [g.sum()]])

    from scipy.optimize import minimize  # here, not at import: a serving process loads scipy at its first job

    start = np.concatenate([q0, [0.0]])
    found = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return found.x[:-1].astype(np.float32)


def calibrate(raw_pos: np.ndarray, raw_neg: np.ndarray) -> tuple[float, float]:
    """(a, b) so that sigmoid(a * raw + b) fits the object's raw scores (positives `raw_pos`, negatives `raw_neg`)
    with a class-balanced logistic loss and a >= 0.01 (scores keep raw's order); starts at the identity."""
    r = np.concatenate([raw_pos, raw_neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(raw_pos)), np.zeros(len(raw_neg))])
    w = np.where(y > 0, 0.5 / max(len(raw_pos), 1), 0.5 / max(len(raw_neg), 1))
    from scipy.optimize import minimize

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * r + params[1]
        g = w * (sigmoid(z) - y)
        return float(w @ (np.logaddexp(0.0, z) - y * z)), np.array([g @ r, g.sum()])

    found = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.01, 100.0), (None, None)])
    return float(found.x[0]), float(found.x[1])


def fpr_threshold(negative_scores: np.ndarray, false_positive_rate: float) -> float:
    """The threshold that says "yes" on `false_positive_rate` of these scores of frames without the object: midway
    between the last score allowed above it and the first refused."""
    ranked = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if not len(ranked):
        raise ValueError("a threshold needs scores of frames without the object")
    allowed = min(int(false_positive_rate * len(ranked) + 1e-9), len(ranked) - 1)
    above = ranked[allowed - 1] if allowed else 1.0
    return float((above + ranked[allowed]) / 2)


def ranking_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """ROC AUC of positives against negatives: the share of (positive, negative) pairs the positive outscores, ties
    counted half (the Mann-Whitney statistic, as scikit-learn's roc_auc_score); NaN without both."""
    pos, neg = np.asarray(positive_scores, np.float64).ravel(), np.asarray(negative_scores, np.float64).ravel()
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = average_ranks(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], len(values))  # each tie group is ordered[start:end], ranks start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks
