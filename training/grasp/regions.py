"""Region-level distillation (ViLD-style): the teacher's embedding of each object's crop, cached, and the
student's dense features pooled over that object's mask, so the teacher's open-vocabulary knowledge of single
objects reaches the student's per-location features in clutter."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.ops import roi_align
from tqdm import tqdm

from training.feature_cache import cache_key
from training.grasp.data import Episode
from training.teacher import Teacher
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.image_codec import read_rgb

log = logging.getLogger(__name__)
CROP_MARGIN = 0.25  # each side of the visible box grows by this share of its longer side
MIN_CROP_PX = 8     # smaller boxes are grown to this side


@dataclass
class RegionTargets:
    """Teacher features (N, K, D) of the crop around each episode's k-th object (manifest order); `valid` (N, K)
    is False for slots without an object or without visible pixels."""

    features: torch.Tensor
    valid: torch.Tensor


def crop_box(bbox: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """A square crop (left, top, right, bottom; exclusive) around an inclusive pixel box, grown by CROP_MARGIN,
    at least MIN_CROP_PX wide, shifted to lie inside the image where it fits."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0 + 1, y1 - y0 + 1)
    side = min(max(MIN_CROP_PX, round(side * (1 + 2 * CROP_MARGIN))), width, height)
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return left, top, left + side, top + side


def teacher_region_features(teacher: Teacher, episodes: list[Episode], cache_dir: str | os.PathLike,
                            desc: str = "teacher region features") -> RegionTargets:
    """Teacher features of every visible object's crop of the base RGB view, cached under the teacher, the
    episodes' files and boxes, and the crop rule."""
    slots = max((len(ep.objects) for ep in episodes), default=0)
    signature = [(str(ep.images["base_rgb"]), os.stat(ep.images["base_rgb"]).st_mtime_ns,
                  [o.bbox for o in ep.objects.values()]) for ep in episodes]
    key = cache_key({"kind": "regions", "teacher": teacher.fingerprint(), "episodes": signature,
                     "crop": [CROP_MARGIN, MIN_CROP_PX]})
    path = Path(cache_dir) / f"regions-{key}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        log.info("teacher region features: reused cache %s", path)
        return RegionTargets(tensors["features"], tensors["valid"].bool())
    features = torch.zeros(len(episodes), slots, teacher.embed_dim)
    valid = torch.zeros(len(episodes), slots, dtype=torch.bool)
    crops, where = [], []

    def flush() -> None:
        if crops:
            feats = teacher.encode_images(torch.stack(crops))
            for (i, k), f in zip(where, feats):
                features[i, k], valid[i, k] = f, True
            crops.clear()
            where.clear()

    for i, ep in enumerate(tqdm(episodes, desc=desc, unit="obs")):
        boxes = [(k, o.bbox) for k, o in enumerate(ep.objects.values()) if o.bbox is not None]
        if not boxes:
            continue
        rgb = read_rgb(ep.images["base_rgb"])
        image = Image.fromarray(rgb)
        for k, bbox in boxes:
            crops.append(teacher.preprocess(image.crop(crop_box(bbox, rgb.shape[1], rgb.shape[0]))))
            where.append((i, k))
        if len(crops) >= teacher.config.batch_size:
            flush()
    flush()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"features": features.contiguous(), "valid": valid.to(torch.uint8)},
                                             tmp))
    return RegionTargets(features, valid)


def mask_boxes(masks: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object slot of masks (B, S, S) (value k + 1 = slot k): the box of its pixels (B, K, 4) as left, top,
    right, bottom with exclusive right / bottom edges (S, S, -1 + 1, ... where it has none) and its pixel count
    (B, K)."""
    s = masks.shape[-1]
    onehot = F.one_hot(masks.long().clamp(max=slots), slots + 1)[..., 1:].bool()  # (B, S, S, K)
    coords = torch.arange(s, device=masks.device)
    rows, cols = onehot.any(2), onehot.any(1)  # (B, S, K): rows (y) / columns (x) holding the slot
    big = torch.tensor(s, device=masks.device)
    y0 = torch.where(rows, coords[None, :, None], big).amin(1)
    y1 = torch.where(rows, coords[None, :, None], -1).amax(1) + 1
    x0 = torch.where(cols, coords[None, :, None], big).amin(1)
    x1 = torch.where(cols, coords[None, :, None], -1).amax(1) + 1
    return torch.stack([x0, y0, x1, y1], -1), onehot.sum((1, 2))


@torch.no_grad()
def online_region_features(teacher: Teacher, x: torch.Tensor, masks: torch.Tensor, slots: int,
                           rows: torch.Tensor, rgb_start: int = 0) -> RegionTargets:
    """The teacher's features of each visible object's crop (crop_box's rule) of frames `x` (B, C, S, S, the
    base RGB view at channels rgb_start..+3, normalised with the teacher's mean / std) as they are now, e.g.
    augmented, for the frames `rows` (B,) selects; other frames' slots are not valid. Crops are bilinear resamples
    to the teacher's input size."""
    b, s = x.shape[0], x.shape[-1]
    boxes, count = mask_boxes(masks, slots)
    features = torch.zeros(b, slots, teacher.embed_dim)
    valid = (count > 0) & rows.to(count.device)[:, None]
    where = torch.nonzero(valid).tolist()
    if not where:
        return RegionTargets(features, valid)
    rois = []
    for i, k in where:
        x0, y0, x1, y1 = boxes[i, k].tolist()
        left, top, right, bottom = crop_box((x0, y0, x1 - 1, y1 - 1), s, s)
        rois.append([i, left, top, right, bottom])
    size = teacher.image_size
    crops = roi_align(x[:, rgb_start:rgb_start + 3].float(), torch.tensor(rois, dtype=torch.float32, device=x.device),
                      (size, size), aligned=True)
    feats = teacher.encode_images(crops)
    for (i, k), f in zip(where, feats):
        features[i, k] = f
    return RegionTargets(features, valid)


def region_weights(masks: torch.Tensor, slots: int, side: int, min_cells: float = 0.25
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object slot, its share of each cell of a side x side feature map: weights (B, K, side*side), each
    object's row summing to 1, and `covered` (B, K): the object covers at least `min_cells` cells' worth."""
    onehot = F.one_hot(masks.long().clamp(max=slots), slots + 1)[..., 1:].permute(0, 3, 1, 2).float()
    area = F.adaptive_avg_pool2d(onehot, side).flatten(2)  # (B, K, L): fraction of each cell
    total = area.sum(-1)
    return area / total.clamp_min(1e-12)[..., None], total >= min_cells


def region_loss(local: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
    """Mean (1 - cosine) between each valid object's mask-pooled local features (B, K, D) and the teacher's
    feature of its crop; zero when no object is valid."""
    pooled = F.normalize(weights @ local, dim=-1)
    cos = (pooled * targets).sum(-1)
    valid = valid.to(cos.dtype)
    return ((1 - cos) * valid).sum() / valid.sum().clamp_min(1.0)

