"""vlkd_ros.ros.debug_image.annotate: one coloured line per object on a copy of the frame."""
import numpy as np
import pytest

from vlkd_ros.ros.debug_image import GRASPABLE_COLOUR, NOT_GRASPABLE_COLOUR, annotate

pytest.importorskip("cv2", reason="annotate draws with OpenCV")


def rows_with(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Indices of the rows holding a pixel whose strongest channel is `colour`'s, well above the others
    (anti-aliased text blends into the background, so exact colours are rare on small frames)."""
    channel = int(np.argmax(colour))
    pixels = image.astype(int)
    others = np.delete(pixels, channel, axis=2).max(axis=2)
    return np.flatnonzero((pixels[..., channel] - others > 40).any(axis=1))


def test_lines_are_green_for_graspable_and_red_for_not() -> None:
    """The first object's line is drawn green above the second object's red one; the input is unchanged."""
    frame = np.full((120, 160, 3), 90, np.uint8)
    before = frame.copy()
    out = annotate(frame, ["red circle", "blue square"], [0.91, 0.12], [True, False])
    np.testing.assert_array_equal(frame, before)
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    green, red = rows_with(out, GRASPABLE_COLOUR), rows_with(out, NOT_GRASPABLE_COLOUR)
    assert green.size and red.size, "both lines are drawn in their colours"
    assert green.max() < red.min(), "one line per object, in order, top to bottom"
    assert green.min() < 22, "the first line starts at the top"


def test_no_objects_no_lines() -> None:
    """Nothing to report: the frame comes back as it was (a copy)."""
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = annotate(frame, [], [], [])
    np.testing.assert_array_equal(out, frame)
    assert out is not frame


def test_text_scales_with_the_frame() -> None:
    """A 1200-row frame gets its lines twice as far apart as a 600-row one."""
    def first_rows(height: int) -> tuple[int, int]:
        out = annotate(np.zeros((height, 800, 3), np.uint8), ["a", "b"], [0.5, 0.5], [True, False])
        return rows_with(out, GRASPABLE_COLOUR).max(), rows_with(out, NOT_GRASPABLE_COLOUR).max()

    small, large = first_rows(600), first_rows(1200)
    assert large[1] - large[0] == pytest.approx(2 * (small[1] - small[0]), abs=2)
