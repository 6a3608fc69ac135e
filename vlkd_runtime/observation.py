"""The one observation transform, in numpy: camera views (HxWx3 uint8 RGB; HxW uint16 mm or float32 m depth) ->
the model's stacked (C, S, S) float32 input, each view resized (shorter side, bilinear with antialias as torch's
`interpolate(antialias=True)`, nearest for depth) and centre-cropped to S."""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np

# Camera views an observation can hold: kind and channel count. A model stacks the views it uses, in order.
VIEWS: dict[str, tuple[str, int]] = {"base_rgb": ("rgb", 3), "base_depth": ("depth", 1),
                                     "hand_rgb": ("rgb", 3), "hand_depth": ("depth", 1)}


def check_views(views: list[str]) -> None:
    """Views must be known, unique, and include base_rgb (the view the teacher sees)."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown or no views {unknown or views}; choose from {list(VIEWS)}")
    if len(set(views)) != len(views):
        raise ValueError(f"views contain duplicates: {views}")
    if "base_rgb" not in views:
        raise ValueError(f"views must include 'base_rgb' (the teacher's view), got {views}")


def view_channels(views: list[str]) -> int:
    """Number of stacked input channels for `views`."""
    return sum(VIEWS[v][1] for v in views)


def view_start(views: list[str], view: str) -> int:
    """The first stacked channel of `view` among `views`."""
    return view_channels(views[:views.index(view)])


def rgb_offsets(views: list[str]) -> list[int]:
    """The first stacked channel of each RGB view among `views`, in stacking order."""
    return [view_start(views, v) for v in views if VIEWS[v][0] == "rgb"]


def check_rgb(view: str, array: np.ndarray) -> np.ndarray:
    """An RGB view must be a non-empty HxWx3 uint8 array."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 \
            or 0 in array.shape:
        raise ValueError(f"view {view!r} must be an HxWx3 uint8 RGB array, got {describe(array)}")
    return array


def check_depth(view: str, array: np.ndarray) -> np.ndarray:
    """A depth view must be HxW (or HxWx1), uint16 millimetres or float32 metres; returned as int32 mm or float32 m."""
    ok = isinstance(array, np.ndarray) and array.dtype in (np.uint16, np.float32) and 0 not in array.shape \
        and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1))
    if not ok:
        raise ValueError(f"view {view!r} must be an HxW depth array, uint16 millimetres or float32 metres, "
                         f"got {describe(array)}")
    array = array.reshape(array.shape[:2])
    if array.dtype == np.float32 and not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    return array.astype(np.int32) if array.dtype == np.uint16 else array


def describe(value: object) -> str:
    """What a malformed view is, for an error message."""
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} dtype {value.dtype}"
    return f"a {type(value).__name__}"


class ObservationTransform:
    """Views -> one (C, S, S) float32 array: RGB in [0, 1] normalised with the teacher's mean/std, depth clipped to
    [0, depth_max_m] and mapped to [-1, 1]."""

    def __init__(self, views: list[str], image_size: int, mean: list[float] | tuple[float, ...],
                 std: list[float] | tuple[float, ...], depth_max_m: float):
        check_views(list(views))
        self.views, self.image_size, self.depth_max_m = list(views), int(image_size), float(depth_max_m)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    @property
    def channels(self) -> int:
        """Stacked channel count."""
        return view_channels(self.views)

    @property
    def needs_depth(self) -> bool:
        """True when a depth view is stacked."""
        return any(VIEWS[v][0] == "depth" for v in self.views)

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Stack the model's views of one observation; raises ValueError naming a missing or malformed view."""
        if not isinstance(observation, Mapping):
            raise ValueError(f"an observation must be a dict of views {self.views}, got {type(observation).__name__}")
        missing = [v for v in self.views if v not in observation]
        if missing:
            raise ValueError(f"observation lacks view(s) {missing}: this model stacks {self.views} "
                             f"(got {sorted(observation)})")
        return np.concatenate([self._view(v, observation[v]) for v in self.views])

    def _view(self, view: str, array: np.ndarray) -> np.ndarray:
        if VIEWS[view][0] == "rgb":
            x = check_rgb(view, array).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
            x = np.clip(resize_crop(x, self.image_size, "bilinear"), 0, 1)
            return (x - self.mean) / self.std
        x = check_depth(view, array)
        t = x.astype(np.float32)
        if x.dtype == np.int32:
            t = t / np.float32(1000.0)
        t = np.clip(resize_crop(t[None], self.image_size, "nearest"), 0, np.float32(self.depth_max_m))
        return t / np.float32(self.depth_max_m) * 2 - 1


def resize_crop(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(C, H, W) float32 resized so the shorter side is `size` (bilinear with antialias, or nearest), centre-cropped
    to (C, size, size): the one geometry of every view and mask."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    if (nh, nw) != (h, w) and mode == "bilinear":
        x = _resample(x, *_aa_taps(w, nw, left, size))  # (C, H, S)
        return _resample(x.transpose(0, 2, 1), *_aa_taps(h, nh, top, size)).transpose(0, 2, 1)
    if (nh, nw) != (h, w):
        x = x[:, _nearest(h, nh)][:, :, _nearest(w, nw)]
    return np.ascontiguousarray(x[:, top:top + size, left:left + size])


def input_to_frame(u: float, v: float, width: int, height: int) -> tuple[float, float]:
    """Pixel (x column, y row) of the width x height frame at u, v in [0, 1] of the square model input: `resize_crop`'s
    input is the frame's centre square (side min(width, height)), to within one input pixel (the resize rounds)."""
    side = min(width, height)
    return (width - side) / 2 + u * side, (height - side) / 2 + v * side


@lru_cache(maxsize=64)
def _aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of torch's antialiased bilinear resize of float32 data along one axis
    (align_corners=False): a triangle filter widened by the downscale factor, normalised over the taps inside the
    image, computed in float32 with torch's roundings, so the weights are torch's bit for bit."""
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    support = scale if scale >= 1 else f32(1.0)
    inv = f32(1) / scale if scale >= 1 else f32(1.0)
    out = np.zeros((n_out, n_in), f32)
    for i in range(n_out):
        centre = f32(float(scale) * (i + 0.5))
        lo = max(int(float(centre) - float(support) + 0.5), 0)
        hi = min(int(float(centre) + float(support) + 0.5), n_in)
        x = np.abs((((np.arange(lo, hi).astype(f32) - centre).astype(np.float64) + 0.5) * float(inv)).astype(f32))
        weights = np.where(x < 1, f32(1) - x, f32(0)).astype(f32)
        total = f32(0)
        for w in weights:  # summed in order, in float32
            total = f32(total + w)
        out[i, lo:hi] = weights / total if total else weights
    return out


@lru_cache(maxsize=64)
def _aa_taps(n_in: int, n_out: int, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Output indices start..start+size of `_aa_weights` as taps: source indices and weights (size, K), zero-padded."""
    weights = _aa_weights(n_in, n_out)[start:start + size]
    k = int((weights > 0).sum(1).max())
    lo = np.clip((weights > 0).argmax(1), 0, n_in - k)
    idx = lo[:, None] + np.arange(k)
    return idx, np.take_along_axis(weights, idx, 1)


def _resample(x: np.ndarray, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x (C, H, W) -> (C, H, S) along the last axis, output s the weighted sum of taps x[..., idx[s]]."""
    return (x[..., idx] * weights).sum(-1, dtype=np.float32)


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output index of torch's 'nearest' resize along one axis."""
    scale = np.float32(n_in / n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


