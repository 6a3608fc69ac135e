"""Where the model sees an object, in pixels of the judged image.

A model answer may carry `"location": {"u", "v", "box": [x0, y0, x1, y1], "confidence"}`, normalised to [0, 1] of
the model's square input. The observation transform (`training.grasp.data.ObservationTransform`) resizes the frame
so its shorter side is the input size and centre-crops the longer one, so the input is the centre square of the
frame (side min(width, height)); `frame_location` maps back onto it (to within one model-input pixel: the
transform rounds the resized size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class PixelLocation:
    """An object's point (u column, v row), box (x_min, y_min, x_max, y_max) and confidence, in frame pixels."""

    u: float
    v: float
    box: tuple[float, float, float, float]
    confidence: float


def frame_location(location: Mapping[str, Any] | None, width: int, height: int) -> PixelLocation | None:
    """A model answer's normalised `location` in pixels of the width x height frame it judged; None when the
    answer has none. ValueError (one line) when it is not {"u", "v", "box": 4 numbers, "confidence"} of finite
    numbers; coordinates are clipped to the model input, the confidence to [0, 1]."""
    if location is None:
        return None
    try:
        u, v, confidence = float(location["u"]), float(location["v"]), float(location["confidence"])
        x0, y0, x1, y1 = (float(b) for b in location["box"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the model's location {location!r} is not {{'u', 'v', 'box': [x0, y0, x1, y1], "
                         f"'confidence'}} of numbers: {type(err).__name__}: {err}") from None
    if not all(math.isfinite(n) for n in (u, v, confidence, x0, y0, x1, y1)):
        raise ValueError(f"the model's location {location!r} holds a non-finite number")
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2

    def px(n: float, offset: float) -> float:
        return offset + min(max(n, 0.0), 1.0) * side

    return PixelLocation(px(u, left), px(v, top),
                         (px(min(x0, x1), left), px(min(y0, y1), top), px(max(x0, x1), left), px(max(y0, y1), top)),
                         min(max(confidence, 0.0), 1.0))
