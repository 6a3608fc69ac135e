"""The answer arithmetic in numpy: a grasp model's logits of image features against each name's query (prompt
features, or a query vector learnt from shots) and, for dense features, where its local term looks for the name.

logit(x, y) = s * (g . t+(y) - g . t-(y) + w * sum_l a_l x_l . (t+ - t-)) + b: the global embedding g, the L
locations x_l weighted by a softmax over locations of the scaled differences (DualCoOp's local aggregation, for a
dense model with local weight w), scale s and bias b as trained (`training.grasp.model.GraspScorer`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

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
        return np.float32(math.exp(float(np.float32(math.log(self.logit_scale)))))

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
        sim = feats @ pos.T if neg is None else feats @ pos.T - feats @ neg.T
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
    side = math.isqrt(att.shape[-1])
    if side == 0 or side * side != att.shape[-1]:
        raise ValueError(f"locating needs a square feature map of dense features, got {att.shape[-1]} locations")
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
