"""Multi-label grasp losses (asymmetric, BCE) registered beside the distillation terms, and the batch they read.

A grasp config lists terms like a distillation config: one multi-label term plus the distillation terms that
need no per-image class label (L_im-cst, L_mse, IFAlign, KL refinement); L_cls, L_vlprox and L_cap assume one
label per image and do not apply to multi-object observations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.grasp.regions import region_loss
from training.losses import DistillBatch, LossTerm, WeightedLoss, build_loss, register_loss

MULTILABEL_TERMS = ("asl", "bce")
CLUTTER_DISTILL_TERMS = ("im_cst", "mse", "ifalign", "kl_refine")
REGION_TERMS = ("region",)


@dataclass
class GraspBatch(DistillBatch):
    """A DistillBatch plus per-object logits (B, N), graspable targets (B, N) and a mask (B, N) of the pairs
    whose label is known. `text` holds the N objects' positive prompt features; `labels` is unused. For region
    distillation: a dense student's local features `local` (B, L, D), each object slot's `region_weights`
    (B, K, L) over them, the teacher's crop features `region_targets` (B, K, D) and `region_valid` (B, K)."""

    logits: Tensor | None = None
    targets: Tensor | None = None
    mask: Tensor | None = None
    local: Tensor | None = None
    region_weights: Tensor | None = None
    region_targets: Tensor | None = None
    region_valid: Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        b, n = self.student.shape[0], self.text.shape[0]
        for name in ("logits", "targets", "mask"):
            value = getattr(self, name)
            if value is None or tuple(value.shape) != (b, n):
                raise ValueError(f"GraspBatch.{name} must be ({b}, {n}), got "
                                 f"{None if value is None else tuple(value.shape)}")


def _multilabel(batch: DistillBatch, name: str) -> GraspBatch:
    if not isinstance(batch, GraspBatch):
        raise ValueError(f"loss {name!r} is a multi-label grasp loss: it needs a GraspBatch, "
                         f"got {type(batch).__name__}")
    return batch


REDUCTIONS = ("image", "pair")


def _reduce(loss: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """'image': sum over an image's known pairs, mean over images with any (the ASL paper's scale: it grows
    with the number of objects, like a softmax CE over them); 'pair': mean over all known pairs."""
    mask = mask.to(loss.dtype)
    total = (loss * mask).sum()
    if reduction == "pair":
        return total / mask.sum().clamp_min(1.0)
    return total / (mask.sum(dim=1) > 0).sum().clamp_min(1)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


@register_loss("bce")
class BCELoss(LossTerm):
    """Binary cross-entropy over the known (image, object) pairs; `pos_weight` up-weights positives."""

    def __init__(self, pos_weight: float = 1.0, reduction: str = "image") -> None:
        super().__init__()
        if not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight!r}")
        _check_reduction(reduction)
        self.pos_weight, self.reduction = pos_weight, reduction

    def forward(self, batch: DistillBatch) -> Tensor:
        b = _multilabel(batch, "bce")
        loss = F.binary_cross_entropy_with_logits(b.logits, b.targets.float(), reduction="none",
                                                  pos_weight=torch.tensor(self.pos_weight, device=b.logits.device))
        return _reduce(loss, b.mask, self.reduction)


@register_loss("asl")
class AsymmetricLoss(LossTerm):
    """Asymmetric loss (Ridnik et al., ICCV'21): focusing gamma_pos / gamma_neg and probability shifting `clip`
    on negatives, over the known pairs."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
                 reduction: str = "image") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        if gamma_pos < 0 or gamma_neg < 0 or not 0 <= clip < 1:
            raise ValueError(f"asl needs gamma_pos, gamma_neg >= 0 and 0 <= clip < 1; "
                             f"got {gamma_pos}, {gamma_neg}, {clip}")
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def forward(self, batch: DistillBatch) -> Tensor:
        b = _multilabel(batch, "asl")
        y = b.targets.float()
        p = torch.sigmoid(b.logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        loss_pos = y * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        loss_neg = (1 - y) * p_neg.pow(self.gamma_neg) * torch.log((1 - p_neg).clamp(min=self.eps))
        return _reduce(-(loss_pos + loss_neg), b.mask, self.reduction)


@register_loss("region")
class RegionLoss(LossTerm):
    """Region distillation: 1 - cosine between each object's mask-pooled local features and the teacher's
    feature of its crop (training.grasp.regions), over the objects visible enough."""

    def forward(self, batch: DistillBatch) -> Tensor:
        b = _multilabel(batch, "region")
        if b.local is None or b.region_weights is None or b.region_targets is None or b.region_valid is None:
            raise ValueError("loss 'region' needs a dense student (student.dense=true) and a dataset with masks")
        return region_loss(b.local, b.region_weights, b.region_targets, b.region_valid)


def build_grasp_loss(specs: list[dict[str, Any]]) -> WeightedLoss:
    """Build the weighted sum from `{type, weight, params}` specs: exactly one multi-label term, plus any
    distillation terms that apply to multi-object images."""
    loss = build_loss(specs)
    kinds = list(loss.terms)
    multi = [k for k in kinds if k in MULTILABEL_TERMS]
    other = [k for k in kinds if k not in MULTILABEL_TERMS + CLUTTER_DISTILL_TERMS + REGION_TERMS]
    if len(multi) != 1:
        raise ValueError(f"grasp losses need exactly one multi-label term from {list(MULTILABEL_TERMS)}, got {kinds}")
    if other:
        raise ValueError(f"losses {other} need one class label per image and do not apply to clutter "
                         f"observations; use {list(MULTILABEL_TERMS + CLUTTER_DISTILL_TERMS + REGION_TERMS)}")
    return loss


def needs_regions(loss: WeightedLoss) -> bool:
    """True when a term reads object masks and the teacher's crop features."""
    return any(k in REGION_TERMS for k in loss.terms)


def needs_teacher_features(loss: WeightedLoss) -> bool:
    """True when a term reads the teacher's image features."""
    return any(k in CLUTTER_DISTILL_TERMS for k in loss.terms)
