"""The answer arithmetic in numpy: a grasp model's logits of image features against each name's query (prompt
features, or a query vector learnt from shots) and, for dense features, where its local term looks for the name.

logit(x, y) = s * (g . t+(y) - g . t-(y) + w * sum_l a_l x_l . (t+ - t-)) + b: the global embedding g, the L
locations x_l weighted by a softmax over locations of the scaled differences (DualCoOp's local aggregation, for a
dense model with local weight w), scale s and bias b as trained (`training.grasp.model.GraspScorer`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scorer:
    """A trained grasp scorer's constants: logit scale and bias, and the local-aggregation weight of a dense model
    (None: global features only). `scale` is what the trainer's float32 exp(log scale) gives, to an ulp."""

    logit_scale: float
    logit_bias: float
    local_weight: float | None = None

    @property
    def scale(self) -> np.float32:
        """The logit scale as the scorer computes it: exp of its float32 log."""
        return _float32_exp_log(self.logit_scale)

    def logits(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
        """Logits (B, N) of features (B, D) or dense (B, 1 + L, D) against queries (N, D)."""
        return self._logits(feats, pos, neg)[0]

    def score_and_locate(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None
                         ) -> tuple[np.ndarray, np.ndarray | None]:
        """`logits` and, for dense features, `peak_boxes` of the attention over locations (None for global ones)."""
        logits, attention = self._logits(feats, pos, neg)
        return logits, None if attention is None else peak_boxes(attention)

    def _logits(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        sim = _similarity(feats, pos, neg)
        scale, bias = self.scale, np.float32(self.logit_bias)
        if feats.ndim == 2:
            return scale * sim + bias, None
        if self.local_weight is None:
            raise ValueError("dense features (B, 1 + L, D) need a scorer with local_weight (a dense grasp model)")
        local = sim[:, 1:]  # (B, L, N)
        z = scale * local
        attention = np.exp(z - z.max(1, keepdims=True))
        attention /= attention.sum(1, keepdims=True)  # softmax over locations
        weighted = np.float32(self.local_weight) * (attention * local).sum(1)
        return scale * (sim[:, 0] + weighted) + bias, attention


def peak_boxes(attention: np.ndarray) -> np.ndarray:
    """Where the local term looks for each name, (B, N, 7) float32 from the attention over a square map of locations
    (B, L, N): u, v (the attention peak's cell centre) and x_min, y_min, x_max, y_max (cells holding >= half the
    peak's weight), normalised to [0, 1] of the square input, then the peak's attention weight."""
    att = np.asarray(attention, np.float32).transpose(0, 2, 1)  # (B, N, L)
    side = _square_side(att.shape[-1], "locating needs a square feature map of dense features")
    peak, cell = att.max(-1), att.argmax(-1)
    near = att.reshape(*att.shape[:2], side, side) >= 0.5 * peak[..., None, None]
    rows, cols = near.any(-1), near.any(-2)  # (B, N, side): rows / columns holding a cell near the peak
    y0, y1 = rows.argmax(-1), side - rows[..., ::-1].argmax(-1)
    x0, x1 = cols.argmax(-1), side - cols[..., ::-1].argmax(-1)
    u, v = cell % side + 0.5, cell // side + 0.5
    boxes = np.stack([u, v, x0, y0, x1, y1], -1) / side
    return np.concatenate([boxes, peak[..., None]], -1).astype(np.float32)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """The logistic function, without overflow warnings (float64)."""
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


# A detector model's features (B, L, FIELDS + D): per location of its stride-8 map (row-major), these channels, then
# its L2-normalised embedding in the teacher's space. Logits are raw; dx, dy (the object centre's offset from the
# cell centre, in cells) and the box sides (distances from that centre to the box edges, in fractions of the square
# input) are already activated by the network.
DETECTOR_CHANNELS = ("objectness", "free", "visible", "supports", "dx", "dy", "left", "top", "right", "bottom")
FIELDS = len(DETECTOR_CHANNELS)
MAX_LOG_SCORE = -1e-7  # log-scores are clipped below 0 so that their logit is finite


@dataclass(frozen=True)
class DetectorScorer:
    """A detector model's answer: for a name X with query t (its text features, or a query vector learnt from
    shots), each location l scores p_l = sigmoid(o_l) * m_l(t) * sigmoid(f_l) (objectness, match with the name,
    free to grasp: visible enough and nothing resting on it); the answer is the best location's p, returned as a
    logit, and its location is that location's box. The match m_l(t) is sigmoid(s * e_l . t + b) or, with a
    `vocabulary` (the text features (V, D) of the model's label names, and their negative prompts' or None),
    ViLD's softmax of z = s * e_l . t against the vocabulary's z_v and itself: exp(z) / (sum_v exp(z_v) + exp(z)),
    so that a name wins only where it matches better than the names of the other objects the model knows (a name
    of the vocabulary counts twice, which keeps its answers' order). `match_scale` and `match_bias` are s and b as
    trained (`training.grasp.model.DetectorScorer`). Features with a second, distilled-only embedding (FIELDS + 2D,
    ViLD's image head) ensemble the two matches as ViLD does, geometrically: log m = (1 - w) log m_text +
    w log m_image, w = `image_weight`."""

    match_scale: float
    match_bias: float
    vocabulary: tuple[np.ndarray, np.ndarray | None] | None = field(default=None, compare=False)
    image_weight: float = 0.5

    @property
    def scale(self) -> np.float32:
        """The match scale as the trainer computes it: exp of its float32 log."""
        return _float32_exp_log(self.match_scale)

    def logits(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
        """Logits (B, N) of detector features (B, L, FIELDS + D) against queries (N, D)."""
        return self._best(feats, pos, neg)[0]

    def score_and_locate(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """`logits` and where each name was found, (B, N, 7) float32: u, v (the object centre), x_min, y_min, x_max,
        y_max of its box, normalised to [0, 1] of the square input, then the answer's probability."""
        logits, best, cell = self._best(feats, pos, neg)
        return logits, detector_boxes(feats, best, cell)

    def log_scores(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
        """log p_l per location and name, (B, L, N) float32."""
        check_detector_features(feats, pos.shape[-1])
        prior = -(_softplus(-feats[..., 0]) + _softplus(-feats[..., 1]))  # log sigmoid(o) + log sigmoid(f)
        named, distilled = detector_embeddings(feats, pos.shape[-1])
        match = self._log_match(named, pos, neg)
        if distilled is not None:  # ViLD's ensemble with the distilled embedding
            w = np.float32(self.image_weight)
            match = (np.float32(1) - w) * match + w * self._log_match(distilled, pos, neg)
        return (prior[..., None] + match).astype(np.float32)

    def _log_match(self, emb: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
        """log m per location and name (..., N) of embeddings (..., D)."""
        z = self.scale * _similarity(emb, pos, neg)
        if self.vocabulary is None:
            return -_softplus(-(z + np.float32(self.match_bias)))
        zv = self.scale * _similarity(emb, *self.vocabulary)
        top = zv.max(-1, keepdims=True)
        known = top + np.log(np.exp(zv - top).sum(-1, keepdims=True))  # log sum_v exp(z_v), (..., 1)
        return z - np.logaddexp(known, z)

    def _best(self, feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lp = self.log_scores(feats, pos, neg)
        cell = lp.argmax(1)  # (B, N)
        best = np.minimum(np.take_along_axis(lp, cell[:, None], 1)[:, 0], np.float32(MAX_LOG_SCORE))
        return (best - np.log(-np.expm1(best))).astype(np.float32), best, cell


def check_detector_features(feats: np.ndarray, dim: int) -> None:
    """ValueError unless `feats` is (B, L, FIELDS + dim), or FIELDS + 2 dim with a distilled embedding, over a
    square map of L locations."""
    if feats.ndim != 3 or feats.shape[-1] not in (FIELDS + dim, FIELDS + 2 * dim):
        raise ValueError(f"detector features must be (B, L, {FIELDS} + {dim}) or (B, L, {FIELDS} + 2 x {dim}), got "
                         f"{feats.shape}")
    _square_side(feats.shape[1], "detector features need a square map of locations")


def detector_embeddings(feats: Any, dim: int) -> tuple[Any, Any | None]:
    """The embeddings of detector features (..., FIELDS + dim), or (..., FIELDS + 2 dim) with a distilled one, numpy
    or torch alike: the one trained against the names' texts and the distilled one (None without)."""
    named = feats[..., FIELDS:FIELDS + dim]
    return named, feats[..., FIELDS + dim:] if feats.shape[-1] > FIELDS + dim else None


def detector_boxes(feats: np.ndarray, best: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """(B, N, 7) float32 locations of the cells `cell` (B, N) of detector features (B, L, FIELDS + D) with log-scores
    `best` (B, N): `DetectorScorer.score_and_locate`'s boxes."""
    side = math.isqrt(feats.shape[1])
    at = np.take_along_axis(feats[..., :FIELDS], cell[..., None], 1)  # (B, N, FIELDS)
    u = (cell % side + 0.5 + at[..., 4]) / side
    v = (cell // side + 0.5 + at[..., 5]) / side
    box = np.stack([u - at[..., 6], v - at[..., 7], u + at[..., 8], v + at[..., 9]], -1)
    out = np.concatenate([np.stack([u, v], -1), box, np.exp(best)[..., None]], -1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow, float32."""
    return np.logaddexp(np.float32(0), x).astype(np.float32)


def _float32_exp_log(value: float) -> np.float32:
    """exp(float32(log value)): a scale as the trainer's float32 log-parameter gives it, to an ulp."""
    return np.float32(math.exp(float(np.float32(math.log(value)))))


def _similarity(feats: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
    """feats @ pos.T (minus feats @ neg.T) over the last dim: (..., N)."""
    sim = feats @ pos.T
    return sim if neg is None else sim - feats @ neg.T


def _square_side(locations: int, what: str) -> int:
    """The side of a square map of `locations` cells; ValueError (`what`, and the count) when there is none."""
    side = math.isqrt(locations)
    if side == 0 or side * side != locations:
        raise ValueError(f"{what}, got {locations} locations")
    return side
