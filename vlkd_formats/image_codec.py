"""The one image codec of vlkd: every image file sim/ writes or training/ reads goes through here.

Writing: RGB as 8-bit PNG, depth as 16-bit PNG in millimetres, label images (e.g. per-object masks: pixel k = the
k-th object, 0 = none) as 8-bit single-channel PNG, atomically (OpenCV's PNG encoder, so the files a
collection writes stay byte-identical). Reading: any image file (`IMAGE_SUFFIXES`) decoded with Pillow, colour
converted to RGB as `PIL.Image.convert("RGB")` does (palette, grey and alpha images included); the lossless PNGs
the collectors write decode to the same pixels whichever library reads them.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image

from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.errors import StorageError

MAX_DEPTH_MM = 65535
# File suffixes (lower case) read as images wherever a folder of images is scanned.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file's suffix is one of IMAGE_SUFFIXES (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any image file to an RGB PIL image (raises OSError for a missing or unreadable file)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode any image file to HxWx3 uint8 RGB (read-only; raises OSError for a missing or unreadable file)."""
    return np.asarray(open_rgb(path))


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """Decode a depth image (16-bit PNG, millimetres) to HxW uint16; an 8-bit or other integer image in 0..65535
    is taken as millimetres, a multi-channel one by its first channel. ValueError for anything else."""
    with Image.open(path) as img:
        depth = np.asarray(img)
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.dtype != np.uint16:
        if depth.dtype.kind not in "iu" or depth.min() < 0 or depth.max() > MAX_DEPTH_MM:
            raise ValueError(f"{path}: depth must be a 16-bit PNG in millimetres, got dtype {depth.dtype}")
        depth = depth.astype(np.uint16)
    return depth


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a label image (8-bit single-channel PNG, as `write_label_png` writes) to HxW uint8; ValueError for
    an image of another kind (colour, 16-bit), whose values would not be labels."""
    with Image.open(path) as img:
        if img.mode != "L":
            raise ValueError(f"{path}: a label image must be an 8-bit single-channel PNG, got PIL mode {img.mode!r}")
        return np.asarray(img)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 RGB image or an HxW (HxWx1) 8- or 16-bit single-channel image."""
    import cv2  # here, not at import: a serving process reads images but writes none (OpenCV is ~50 MB)

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG")
    return encoded.tobytes()


def write_rgb_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an HxWx3 uint8 RGB image."""
    return _write(path, encode_png(np.ascontiguousarray(rgb, dtype=np.uint8)))


def write_depth_png(path: str | os.PathLike, depth_mm: np.ndarray) -> Path:
    """Write an HxW(x1) depth map in millimetres as 16-bit PNG (clipped to 0..65535; 0 = no depth)."""
    depth = np.clip(np.asarray(depth_mm).reshape(depth_mm.shape[0], depth_mm.shape[1]), 0, MAX_DEPTH_MM)
    return _write(path, encode_png(depth.astype(np.uint16)))


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write an HxW(x1) image of integer labels 0..255 as an 8-bit single-channel PNG (ValueError outside 0..255)."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(f"a label image must be HxW integers, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values {labels.min()}..{labels.max()} do not fit an 8-bit PNG (0..255)")
    return _write(path, encode_png(labels.astype(np.uint8)))


def _write(path: str | os.PathLike, data: bytes) -> Path:
    try:
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"disk full while writing {path}: {err.strerror}. Finished samples are kept; free "
                               "space and rerun the same command to resume") from err
        raise StorageError(f"cannot write {path}: {err}") from err
