"""sensor_msgs/Image <-> numpy without cv_bridge: colour frames as HxWx3 uint8 RGB, depth as uint16 mm or float32 m."""
from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL.Image import Resampling
from sensor_msgs.msg import Image

from vlkd_formats.errors import VlkdError

# encoding -> (channels, dtype, index of R, G, B in the pixel or None for mono)
COLOR_ENCODINGS: dict[str, tuple[int, np.dtype, tuple[int, int, int] | None]] = {
    "rgb8": (3, np.dtype(np.uint8), (0, 1, 2)),
    "bgr8": (3, np.dtype(np.uint8), (2, 1, 0)),
    "rgba8": (4, np.dtype(np.uint8), (0, 1, 2)),
    "bgra8": (4, np.dtype(np.uint8), (2, 1, 0)),
    "mono8": (1, np.dtype(np.uint8), None),
}
DEPTH_ENCODINGS: dict[str, np.dtype] = {"16UC1": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}


class ImageFormatError(VlkdError, ValueError):
    """An Image message cannot be read as the kind of frame asked for (encoding, size or step is wrong)."""


def _pixels(msg: Image, channels: int, dtype: np.dtype, max_pixels: int) -> np.ndarray:
    """Copy msg.data into a native-order (height, width, channels) array, honouring step, endianness, padding."""
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise ImageFormatError(f"image is {width}x{height}; width and height must both be > 0")
    if max_pixels and width * height > max_pixels:
        raise ImageFormatError(f"image is {width}x{height} = {width * height} pixels; "
                               f"the limit is {max_pixels} pixels (parameter max_image_pixels)")
    row = width * channels * dtype.itemsize
    if step < row:
        raise ImageFormatError(f"step {step} is smaller than width * bytes per pixel = {width} * "
                               f"{channels * dtype.itemsize} = {row} for encoding {msg.encoding!r}")
    try:
        raw = np.frombuffer(msg.data, dtype=np.uint8)
    except TypeError:
        raw = np.asarray(msg.data, dtype=np.uint8)
    if raw.size < step * (height - 1) + row:
        raise ImageFormatError(f"data has {raw.size} bytes but a {width}x{height} {msg.encoding!r} image "
                               f"with step {step} needs {step * height}")
    rows = np.lib.stride_tricks.as_strided(raw, shape=(height, row), strides=(step, 1))
    order = ">" if msg.is_bigendian else "<"
    stored = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
    return np.ascontiguousarray(rows).view(stored).reshape(height, width, channels).astype(dtype, copy=False)


def _shrink(pixels: np.ndarray, side: int, average: bool) -> np.ndarray:
    """Resize HxWxC so its shorter side is `side`; unchanged if already that small. Averaging (uint8, 1 or 3
    channels) is Pillow's box filter, an area average like OpenCV's INTER_AREA (the serving process does without
    OpenCV's ~50 MB); otherwise the nearest pixel (depth)."""
    h, w = pixels.shape[:2]
    if side <= 0 or min(h, w) <= side:
        return pixels
    scale = side / min(h, w)
    width, height = max(1, round(w * scale)), max(1, round(h * scale))
    if not average:
        ys = np.minimum((np.arange(height) * (h / height)).astype(np.intp), h - 1)
        xs = np.minimum((np.arange(width) * (w / width)).astype(np.intp), w - 1)
        return pixels[ys][:, xs]
    image = PILImage.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    return np.asarray(image.resize((width, height), Resampling.BOX)).reshape(height, width, pixels.shape[2])


def image_to_rgb(msg: Image, max_pixels: int = 0, shrink_to: int = 0) -> np.ndarray:
    """Return a colour Image (rgb8, bgr8, rgba8, bgra8, mono8) as a new HxWx3 uint8 RGB array.

    max_pixels > 0 refuses larger frames; shrink_to > 0 area-resizes frames whose shorter side is larger.
    """
    spec = COLOR_ENCODINGS.get(msg.encoding)
    if spec is None:
        raise ImageFormatError(f"unsupported colour encoding {msg.encoding!r}; "
                               f"valid: {', '.join(COLOR_ENCODINGS)}")
    channels, dtype, order = spec
    pixels = _pixels(msg, channels, dtype, max_pixels)
    if order is not None and (order != (0, 1, 2) or channels != 3):
        pixels = np.ascontiguousarray(pixels[:, :, list(order)])  # RGB before resizing: no alpha is averaged
    pixels = _shrink(pixels, shrink_to, average=True)
    return np.repeat(pixels, 3, axis=2) if order is None else pixels


def image_to_depth(msg: Image, max_pixels: int = 0, shrink_to: int = 0) -> np.ndarray:
    """Return a depth Image as HxW: uint16 millimetres for 16UC1, float32 metres for 32FC1 (nearest resize)."""
    dtype = DEPTH_ENCODINGS.get(msg.encoding)
    if dtype is None:
        raise ImageFormatError(f"unsupported depth encoding {msg.encoding!r}; valid: {', '.join(DEPTH_ENCODINGS)}")
    return _shrink(_pixels(msg, 1, dtype, max_pixels), shrink_to, average=False)[:, :, 0]


def numpy_to_image(array: np.ndarray, encoding: str, frame_id: str = "", stamp=None) -> Image:
    """Build an Image from HxW or HxWxC array in `encoding` (one of the colour or depth encodings above)."""
    if encoding in COLOR_ENCODINGS:
        channels, dtype, _ = COLOR_ENCODINGS[encoding]
    elif encoding in DEPTH_ENCODINGS:
        channels, dtype = 1, DEPTH_ENCODINGS[encoding]
    else:
        raise ImageFormatError(f"unsupported encoding {encoding!r}; valid: "
                               f"{', '.join([*COLOR_ENCODINGS, *DEPTH_ENCODINGS])}")
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels or arr.dtype != dtype:
        raise ImageFormatError(f"{encoding} needs an HxWx{channels} {dtype} array (HxW for one channel), "
                               f"got shape {tuple(np.shape(array))} {np.asarray(array).dtype}")
    arr = np.ascontiguousarray(arr.astype(dtype.newbyteorder("<"), copy=False))
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = arr.tobytes()
    return msg
