"""The ~/debug_image picture: the judged frame with one line per object (name, score; green or red)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

GRASPABLE_COLOUR = (40, 200, 40)
NOT_GRASPABLE_COLOUR = (220, 40, 40)


def annotate(rgb: np.ndarray, names: Sequence[str], scores: Sequence[float],
             graspable: Sequence[bool]) -> np.ndarray:
    """Return a copy of the frame with one line per object (name, score; green if graspable, red if not)."""
    try:
        import cv2
    except ImportError:  # without OpenCV the debug image is the bare frame
        return rgb.copy()
    out = np.ascontiguousarray(rgb.copy())
    scale = max(0.35, out.shape[0] / 600)
    for i, (name, score, ok) in enumerate(zip(names, scores, graspable)):
        colour = GRASPABLE_COLOUR if ok else NOT_GRASPABLE_COLOUR
        y = int((i + 1) * 22 * scale)
        cv2.putText(out, f"{name}: {score:.2f}", (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour,
                    max(1, int(2 * scale)), cv2.LINE_AA)
    return out
