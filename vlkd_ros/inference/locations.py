"""Where the model sees an object, in pixels of the judged image.

A model answer may carry `"location": {"u", "v", "box": [x0, y0, x1, y1], "confidence"}`, normalised to [0, 1] of
the model's square input, the frame's centre square; `frame_location` maps it back with
`vlkd_runtime.observation.input_to_frame`, as the evaluation's hit check does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from vlkd_runtime.observation import input_to_frame


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
    def px(a: float, b: float) -> tuple[float, float]:
        return input_to_frame(min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0), width, height)

    (x, y), top_left, bottom_right = px(u, v), px(min(x0, x1), min(y0, y1)), px(max(x0, x1), max(y0, y1))
    return PixelLocation(x, y, (*top_left, *bottom_right), min(max(confidence, 0.0), 1.0))
