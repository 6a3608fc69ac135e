"""Training targets and losses of the grasp detector (training.detector_net): CenterNet-style object-centre
heatmaps and per-object regression read from the simulator's object masks after augmentation, the free / visible /
"something rests on it" heads at each object's centre cell, and the region-text loss of each object's embedding
against the teacher's text embeddings of the Y_id names (softmax over the names, and the answer's own match
logits), and ViLD's distillation of the teacher's crop embedding into the embedding at each object's centre cell
(`crop`; loss "region", training.grasp.regions, distils it into the mask-pooled embedding)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from training.grasp.data import Episode
from training.grasp.regions import mask_boxes
from vlkd_runtime.scoring import detector_embeddings

MIN_PIXELS = 4  # an object slot with fewer visible pixels in the (augmented) frame is no detection target


@dataclass
class DetectorLossConfig:
    """Weights of the detector's terms (0 switches one off) and the heatmap's Gaussian size: sigma is
    `sigma_scale` x the box's shorter side in cells, at least `min_sigma` cells. `crop` is ViLD's distillation at
    the object's centre location (the embedding an answer reads) to the teacher's crop embedding; it applies when
    the losses include 'region' (whose teacher crop features it uses)."""

    heatmap: float = 1.0
    free: float = 1.0
    visible: float = 0.5
    supports: float = 0.5
    offset: float = 1.0
    box: float = 5.0
    text: float = 1.0
    match: float = 1.0
    crop: float = 1.0
    sigma_scale: float = 0.25
    min_sigma: float = 0.5

    def validate(self) -> None:
        """Weights must be >= 0 and the Gaussian size > 0."""
        weights = {k: v for k, v in vars(self).items() if k not in ("sigma_scale", "min_sigma")}
        negative = {k: v for k, v in weights.items() if not v >= 0}
        if negative:
            raise ValueError(f"detector loss weights must be >= 0, got {negative}")
        if not (self.sigma_scale > 0 and self.min_sigma > 0):
            raise ValueError(f"detector.sigma_scale and detector.min_sigma must be > 0, got {self.sigma_scale}, "
                             f"{self.min_sigma}")


@dataclass
class SlotLabels:
    """Per episode and object slot (manifest order, slot k = mask value k + 1): the index of its name among the
    trained names (-1: another name), graspable, visible fraction and supports-other, each (N, K)."""

    name: Tensor
    free: Tensor
    visible: Tensor
    supports: Tensor

    def rows(self, index: Tensor, device: torch.device, named: Tensor | None = None) -> SlotLabels:
        """The labels of episodes `index` (a batch), on `device`; where `named` (B,) is False, no slot's name is
        known (-1: the name terms skip it)."""
        name, free, visible, supports = (t[index].to(device) for t in (self.name, self.free, self.visible,
                                                                         self.supports))
        if named is not None:
            name = torch.where(named.to(device)[:, None], name, -1)
        return SlotLabels(name, free, visible, supports)


def slot_labels(episodes: list[Episode], names: list[str]) -> SlotLabels:
    """The object slots' labels of `episodes` against `names` (the Y_id names the detector is trained on)."""
    slots = max((len(ep.objects) for ep in episodes), default=0)
    index = {n: i for i, n in enumerate(names)}
    out = SlotLabels(torch.full((len(episodes), slots), -1, dtype=torch.long), torch.zeros(len(episodes), slots),
                     torch.zeros(len(episodes), slots), torch.zeros(len(episodes), slots))
    for i, ep in enumerate(episodes):
        for k, (name, obj) in enumerate(ep.objects.items()):
            out.name[i, k] = index.get(name, -1)
            out.free[i, k] = float(obj.graspable)
            out.visible[i, k] = float(obj.visible_fraction)
            out.supports[i, k] = float(obj.supports_other)
    return out


@dataclass
class DetectorTargets:
    """A batch's detection targets on a side x side map: the heatmap (B, L) (a Gaussian peak of 1 at each object's
    centre cell), and per object slot (B, K): `valid` (a detection target in this frame), its centre `cell`, the
    centre's `offset` from that cell's centre in cells (B, K, 2), its box sides left, top, right, bottom from the
    centre in fractions of the input (B, K, 4)."""

    heatmap: Tensor
    valid: Tensor
    cell: Tensor
    offset: Tensor
    sides: Tensor


def detector_targets(masks: Tensor, slots: int, side: int, config: DetectorLossConfig) -> DetectorTargets:
    """Targets from object masks (B, S, S) (value k + 1 = slot k) as augmentation left them: each slot's box is
    that of its visible pixels in the frame, so crops and flips move the targets with the image."""
    b, s = masks.shape[0], masks.shape[-1]
    pixels, count = mask_boxes(masks, slots)
    valid = count >= MIN_PIXELS
    box = pixels.float() / s  # (B, K, 4), exclusive edges in [0, 1]
    box = torch.where(valid[..., None], box, torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device))
    cx, cy = (box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2
    gx, gy = (cx * side).clamp(max=side - 1e-4), (cy * side).clamp(max=side - 1e-4)
    ix, iy = gx.floor().long(), gy.floor().long()
    offset = torch.stack([gx - ix - 0.5, gy - iy - 0.5], -1)
    sides = torch.stack([cx - box[..., 0], cy - box[..., 1], box[..., 2] - cx, box[..., 3] - cy], -1)
    short = torch.minimum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]) * side
    sigma = (short * config.sigma_scale).clamp(min=config.min_sigma)
    grid = torch.arange(side, device=masks.device, dtype=torch.float32) + 0.5
    dx = grid[None, None, None, :] - (ix.float() + 0.5)[..., None, None]  # (B, K, 1, side)
    dy = grid[None, None, :, None] - (iy.float() + 0.5)[..., None, None]  # (B, K, side, 1)
    g = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma[..., None, None] ** 2)) * valid[..., None, None]
    heatmap = g.amax(1).flatten(1) if slots else torch.zeros(b, side * side, device=masks.device)
    return DetectorTargets(heatmap, valid, iy * side + ix, offset, sides)


def focal_heatmap_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced focal loss of objectness logits (B, L) against a Gaussian heatmap (B, L) whose
    peaks are 1, normalised by the number of peaks."""
    p = torch.sigmoid(logits)
    peak = target >= 1 - 1e-4
    pos = -F.logsigmoid(logits) * (1 - p) ** alpha * peak
    neg = -F.logsigmoid(-logits) * p ** alpha * (1 - target) ** beta * ~peak
    return (pos.sum() + neg.sum()) / peak.sum().clamp_min(1)


def detector_loss(feats: Tensor, targets: DetectorTargets, labels: SlotLabels, text: Tensor,
                  match_logits: Callable[[Tensor, Tensor], Tensor], config: DetectorLossConfig,
                  crops: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted detector terms of detector features (B, L, FIELDS + D) for one batch (`labels` its rows of
    SlotLabels); `text` (N, D) the trained names' text features, `match_logits` the scorer's match (embeddings
    (..., D), text -> logits (..., N)); `crops`: the teacher's crop embeddings per slot (B, K, D) and which are
    valid (B, K), for the 'crop' term. With a distilled embedding (features FIELDS + 2D) the text terms train the
    first embedding and the crop term the second. Returns (total, {term: value})."""
    terms = {"heatmap": focal_heatmap_loss(feats[..., 0], targets.heatmap)}
    at = torch.gather(feats, 1, targets.cell[..., None].expand(-1, -1, feats.shape[-1]))  # (B, K, FIELDS + D)
    valid = targets.valid
    emb, distilled = detector_embeddings(at, text.shape[-1])
    distilled = emb if distilled is None else distilled  # the crop term's: a second, distilled-only one if any

    def mean(x: Tensor, keep: Tensor = valid) -> Tensor:
        return (x * keep).sum() / keep.sum().clamp_min(1)

    terms["free"] = mean(F.binary_cross_entropy_with_logits(at[..., 1], labels.free, reduction="none"))
    terms["visible"] = mean(F.binary_cross_entropy_with_logits(at[..., 2], labels.visible, reduction="none"))
    terms["supports"] = mean(F.binary_cross_entropy_with_logits(at[..., 3], labels.supports, reduction="none"))
    terms["offset"] = mean(F.l1_loss(at[..., 4:6], targets.offset, reduction="none").sum(-1))
    terms["box"] = mean(F.l1_loss(at[..., 6:10], targets.sides, reduction="none").sum(-1))
    named = valid & (labels.name >= 0)
    logits = match_logits(emb, text)  # (B, K, N)
    own = labels.name.clamp_min(0)
    terms["text"] = mean(F.cross_entropy(logits.transpose(1, 2), own, reduction="none"), named)
    onehot = F.one_hot(own, text.shape[0]).float()
    terms["match"] = mean(F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(-1), named)
    if crops is not None:
        crop, crop_valid = crops
        terms["crop"] = mean(1 - F.cosine_similarity(distilled, crop, dim=-1), valid & crop_valid)
    total = sum(getattr(config, k) * v for k, v in terms.items())
    return total, terms
