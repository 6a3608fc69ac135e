"""Image files of a dataset dir, written atomically: RGB as 8-bit PNG, depth as 16-bit PNG in millimetres."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np

from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.errors import StorageError

MAX_DEPTH_MM = 65535


def write_rgb_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an HxWx3 uint8 RGB image."""
    return _write_png(path, cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR))


def write_depth_png(path: str | os.PathLike, depth_mm: np.ndarray) -> Path:
    """Write an HxW(x1) depth map in millimetres as 16-bit PNG (clipped to 0..65535; 0 = no depth)."""
    depth = np.clip(np.asarray(depth_mm).reshape(depth_mm.shape[0], depth_mm.shape[1]), 0, MAX_DEPTH_MM)
    return _write_png(path, depth.astype(np.uint16))


def read_rgb_png(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB PNG as HxWx3 uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth_png(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit depth PNG as HxW uint16 millimetres."""
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.dtype != np.uint16:
        raise ValueError(f"{path} is not a 16-bit depth PNG")
    return depth


def _write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG")
    try:
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"disk full while writing {path}: {err.strerror}. Finished samples are kept; free "
                                  "space and rerun the same command to resume") from err
        raise StorageError(f"cannot write {path}: {err}") from err
