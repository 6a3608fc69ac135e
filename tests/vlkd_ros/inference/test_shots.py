"""vlkd_ros.inference.shots: flat frames, noise and thumbnails are no shots; near-duplicates are dropped and k
distinct views required; camera views of the fixture world (and the sim camera's frames) pass."""
import random

import numpy as np
import pytest

from grasp_fixtures import render_scene
from vlkd_ros.inference.shots import (ShotError, base_rgb, change, check_shots, frame_problem,
                                      neighbour_correlation, select_shots, thumbnail)

RNG = np.random.default_rng(0)


def scenes(n: int, seed: int = 3, name: str = "green triangle") -> list[np.ndarray]:
    rng = random.Random(seed)
    return [render_scene([name], rng)[0]["base_rgb"] for _ in range(n)]


def test_camera_views_pass_and_junk_is_refused_with_a_reason():
    for frame in scenes(20, name="red circle"):  # red on a table of the same brightness: the colours still count
        assert frame_problem(frame) is None
    grey = np.full((480, 640, 3), 128, np.uint8)
    assert frame_problem(grey).startswith("is near-uniform (pixel values vary by 0.0, under 4)")
    almost = np.clip(128 + RNG.normal(0, 1, (480, 640, 3)), 0, 255).astype(np.uint8)
    assert "near-uniform" in frame_problem(almost)
    noise = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert frame_problem(noise).startswith("looks like noise, not a camera image (neighbouring pixels correlate")
    grey_noise = np.clip(128 + RNG.normal(0, 10, (480, 640, 3)), 0, 255).astype(np.uint8)
    assert "looks like noise" in frame_problem(grey_noise)
    assert frame_problem(scenes(1)[0][:8, :12]) == ("is 12x8 pixels, too small for a view of an object (shots need "
                                                    "16 or more a side)")
    assert neighbour_correlation(noise) < 0.05 < 0.8 < neighbour_correlation(scenes(1)[0])


def test_thumbnails_average_areas_of_any_size():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 200
    thumb = thumbnail(frame, 32)
    assert thumb.shape == (32, 32, 3) and thumb.dtype == np.float32
    assert np.allclose(thumb[:, :16], 0) and np.allclose(thumb[:, 16:], 200)
    assert thumbnail(np.full((7, 5, 3), 9, np.uint8), 32).shape == (32, 32, 3)  # smaller than the thumbnail
    assert change(thumb, thumb) == 0.0


def test_near_duplicates_are_dropped_and_k_distinct_required():
    views = scenes(5)
    static = [np.clip(views[0] + RNG.normal(0, 1.0, views[0].shape), 0, 255).astype(np.uint8) for _ in range(4)]
    sel = select_shots([views[0], *static, views[1], views[1].copy()])
    assert sel.kept == [0, 5] and sel.duplicates == {1: 0, 2: 0, 3: 0, 4: 0, 6: 5} and sel.refused == {}
    with pytest.raises(ShotError) as err:
        check_shots([views[0], *static], k=3)
    assert str(err.value) == ("only 1 of the 5 shots are distinct views (images[1] repeats images[0], images[2] "
                              "repeats images[0], images[3] repeats images[0], images[4] repeats images[0]); at least "
                              "3 are needed: move the object or the camera between shots")
    assert check_shots(views + [views[2]], k=5).kept == [0, 1, 2, 3, 4]


def test_one_refused_frame_refuses_the_list_naming_it():
    views = scenes(4)
    with pytest.raises(ShotError, match=r"^images\[2\] is near-uniform .*; no few-shot job was started$"):
        check_shots(views[:2] + [np.full((48, 48, 3), 90, np.uint8)] + views[2:], k=3)
    junk = [RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(5)]
    with pytest.raises(ShotError, match=r"^frame\[0\] looks like noise.* \(and 4 more refused\); no few-shot"):
        check_shots(junk, k=5, what="frame")
    with pytest.raises(ShotError, match="1 shots given; at least 2 distinct views are needed"):
        check_shots(views[:1], k=2)


def test_the_colour_view_of_an_observation():
    frame = scenes(1)[0]
    assert base_rgb(frame) is frame and base_rgb({"base_rgb": frame, "base_depth": None}) is frame
    assert base_rgb({"hand_rgb": frame}) is None and base_rgb(frame.astype(np.float32)) is None
