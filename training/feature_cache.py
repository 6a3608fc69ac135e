"""Teacher features computed once, batched, and cached on disk (safetensors) under a content key.

The key covers the teacher fingerprint (model, exact weights, preprocessing) and either the image set
(relative paths, sizes, modification times) or the label texts, so a changed input never reads stale rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.data import ImageList
from training.teacher import Teacher
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.errors import VlkdError
from vlkd_formats.image_codec import open_rgb

log = logging.getLogger(__name__)


class CorruptImagesError(VlkdError, ValueError):
    """More images failed to decode than the configured threshold allows."""


@dataclass
class ImageFeatures:
    """Teacher image features (N, D); rows of images that failed to decode are zero and `valid` is False."""

    features: torch.Tensor
    valid: torch.Tensor
    key: str


def cache_key(parts: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able description of the cached content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def image_set_signature(images: ImageList) -> list[tuple[str, int, int, int]]:
    """(path, size, mtime_ns, target) per image: changes when any image or label changes."""
    out = []
    for path, target in zip(images.paths, images.targets):
        st = os.stat(path)
        out.append((str(Path(path).resolve()), st.st_size, st.st_mtime_ns, target))
    return out


class _DecodeOrNone(Dataset):
    def __init__(self, images: ImageList, transform: Any):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        try:
            return i, self.transform(open_rgb(self.images.paths[i]))
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable image %s: %s", self.images.paths[i], err)
            return i, None


def _collate(batch: list[tuple[int, torch.Tensor | None]]) -> list[tuple[int, torch.Tensor | None]]:
    return batch


def teacher_image_features(teacher: Teacher, images: ImageList, cache_dir: str | os.PathLike,
                           max_corrupt_fraction: float = 0.01, num_workers: int = 0,
                           desc: str = "teacher image features") -> ImageFeatures:
    """Teacher features of every image, from the cache when its key matches, else computed and cached."""
    key = cache_key({"kind": "image", "teacher": teacher.fingerprint(), "images": image_set_signature(images)})
    path = Path(cache_dir) / f"image-{key}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        feats = ImageFeatures(tensors["features"], tensors["valid"].bool(), key)
        log.info("teacher image features: reused cache %s", path)
    else:
        feats = _compute_image_features(teacher, images, num_workers, desc, key)
        atomic_write(path, lambda tmp: save_file(
            {"features": feats.features.contiguous(), "valid": feats.valid.to(torch.uint8)}, tmp))
    _check_corrupt(feats, images, max_corrupt_fraction)
    return feats


def teacher_text_features(teacher: Teacher, texts_per_label: list[list[str]],
                          cache_dir: str | os.PathLike) -> torch.Tensor:
    """Normalised text feature per label (C, D), cached under the teacher and the exact texts."""
    key = cache_key({"kind": "text", "teacher": teacher.fingerprint(), "texts": texts_per_label})
    path = Path(cache_dir) / f"text-{key}.safetensors"
    if path.is_file():
        return load_file(path)["features"]
    feats = teacher.encode_texts(texts_per_label)
    atomic_write(path, lambda tmp: save_file({"features": feats.contiguous()}, tmp))
    return feats


def _compute_image_features(teacher: Teacher, images: ImageList, num_workers: int, desc: str,
                            key: str) -> ImageFeatures:
    n = len(images)
    features = torch.zeros(n, teacher.embed_dim)
    valid = torch.zeros(n, dtype=torch.bool)
    loader = DataLoader(_DecodeOrNone(images, teacher.preprocess), batch_size=teacher.config.batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    with tqdm(total=n, desc=desc, unit="img") as bar:
        for batch in loader:
            good = [(i, x) for i, x in batch if x is not None]
            if good:
                idx = torch.tensor([i for i, _ in good])
                features[idx] = teacher.encode_images(torch.stack([x for _, x in good]))
                valid[idx] = True
            bar.update(len(batch))
    return ImageFeatures(features, valid, key)


def _check_corrupt(feats: ImageFeatures, images: ImageList, max_fraction: float) -> None:
    bad = int((~feats.valid).sum())
    if not bad:
        return
    fraction = bad / max(len(images), 1)
    if fraction > max_fraction:
        examples = [str(images.paths[i]) for i in (~feats.valid).nonzero().flatten()[:3].tolist()]
        raise CorruptImagesError(
            f"{bad} of {len(images)} images ({fraction:.1%}) could not be decoded, over the allowed "
            f"{max_fraction:.1%} (data.max_corrupt_fraction); e.g. {examples}")
    log.warning("%d of %d images could not be decoded and are skipped", bad, len(images))
