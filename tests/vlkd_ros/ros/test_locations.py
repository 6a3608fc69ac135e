"""Object locations: a model's normalised location (of its square input) mapped to pixels of the judged frame,
checked against the real observation transform, and the ObjectLocation field of the node's replies."""
from __future__ import annotations

import numpy as np
import pytest

from ros_peers import INSTALL, finish
from training.grasp.data import ObservationTransform
from vlkd_ros.inference.locations import PixelLocation, frame_location


def test_no_location_is_none() -> None:
    assert frame_location(None, 640, 480) is None


def test_the_model_input_is_the_centre_square_of_the_frame() -> None:
    where = {"u": 0.5, "v": 0.25, "box": [0.0, 0.0, 1.0, 0.5], "confidence": 0.7}
    assert frame_location(where, 640, 480) == PixelLocation(320.0, 120.0, (80.0, 0.0, 560.0, 240.0), 0.7)
    assert frame_location(where, 480, 640) == PixelLocation(240.0, 200.0, (0.0, 80.0, 480.0, 320.0), 0.7)
    assert frame_location(where, 100, 100) == PixelLocation(50.0, 25.0, (0.0, 0.0, 100.0, 50.0), 0.7)


def test_out_of_range_numbers_are_clipped_and_a_reversed_box_is_ordered() -> None:
    where = {"u": -0.2, "v": 1.5, "box": (0.75, 1.25, 0.25, -1), "confidence": 3}
    assert frame_location(where, 200, 100) == PixelLocation(50.0, 100.0, (75.0, 0.0, 125.0, 100.0), 1.0)


@pytest.mark.parametrize("where, reason", [
    ({"u": 0.5, "v": 0.5, "confidence": 1.0}, "KeyError: 'box'"),
    ({"u": 0.5, "v": 0.5, "box": [0, 0, 1], "confidence": 1.0}, "ValueError: not enough values"),
    ({"u": "left", "v": 0.5, "box": [0, 0, 1, 1], "confidence": 1.0}, "could not convert string to float"),
    ({"u": float("nan"), "v": 0.5, "box": [0, 0, 1, 1], "confidence": 1.0}, "holds a non-finite number"),
])
def test_a_malformed_location_is_refused_in_one_line(where, reason) -> None:
    with pytest.raises(ValueError, match=reason) as err:
        frame_location(where, 64, 48)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("width, height", [(64, 48), (48, 64), (97, 61), (40, 40)])
def test_the_mapping_inverts_the_observation_transform(width: int, height: int) -> None:
    """A bright block in the frame: the cell where the real transform puts it, normalised, maps back onto it to
    within one model-input pixel."""
    size = 16
    transform = ObservationTransform(["base_rgb"], size, [0.0] * 3, [1.0] * 3, 1.0)
    side = min(width, height)
    cell = side / size
    for x, y in ((width // 2, height // 2), ((width - side) // 2 + 3, (height - side) // 2 + 2),
                 ((width + side) // 2 - 4, (height + side) // 2 - 3)):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = 255
        image = transform({"base_rgb": frame})[0].numpy()
        row, col = np.unravel_index(int(image.argmax()), image.shape)
        u, v = (col + 0.5) / size, (row + 0.5) / size
        found = frame_location({"u": u, "v": v, "box": [u, v, u, v], "confidence": 1.0}, width, height)
        assert abs(found.u - (x + 0.5)) <= cell and abs(found.v - (y + 0.5)) <= cell, (x, y, found)


@pytest.mark.skipif(not INSTALL.is_dir(), reason=f"{INSTALL} not built; run scripts/build_interfaces.sh")
def test_replies_carry_a_location_message() -> None:
    from builtin_interfaces.msg import Time

    from vlkd_ros.ros.queries import Judged

    results = {"mug": {"score": 0.9, "graspable": True,
                       "location": {"u": 0.5, "v": 0.5, "box": [0.25, 0.25, 0.75, 0.75], "confidence": 0.6}},
               "plate": {"score": 0.1, "graspable": False}, "cup": {"score": 0.2, "graspable": False, "location": None}}
    judged = Judged(results, Time(), "camera", "v0-00000000", "request image", 640, 480)
    mug = judged.location("mug")
    assert mug.valid and (mug.u, mug.v) == (320.0, 240.0)
    assert (mug.x_min, mug.y_min, mug.x_max, mug.y_max) == (200.0, 120.0, 440.0, 360.0)
    assert mug.confidence == pytest.approx(0.6)
    for name in ("plate", "cup"):
        unknown = judged.location(name)
        assert not unknown.valid and (unknown.u, unknown.v, unknown.x_max, unknown.confidence) == (0, 0, 0, 0)


@pytest.fixture(scope="module")
def dense_grasp_model(tiny_clutter, tiny_teacher_file, tmp_path_factory):
    """A dense-student grasp model dir (student.dense: answers carry locations), trained for one epoch."""
    from grasp_fixtures import grasp_overrides
    from training.grasp.train import GraspTrainConfig, train_grasp
    from vlkd_formats.config import load_config

    tmp = tmp_path_factory.mktemp("grasp_dense")
    overrides = grasp_overrides(tiny_clutter, tiny_teacher_file, tmp / "run", tmp / "cache")
    return train_grasp(load_config(GraspTrainConfig, None, overrides + ["student.dense=true", "optim.epochs=1"]))


def test_a_dense_model_locates_the_objects_inside_the_judged_frame(local_node, dense_grasp_model) -> None:
    """The node's replies (one name, several names) carry the dense model's locations, valid and inside the
    64x48 request image; the client's text names them."""
    from vlkd_interfaces.srv import IsGraspable, QueryObjects

    from vlkd_ros.ros.client import answer_lines
    from vlkd_ros.ros.image_msgs import numpy_to_image

    node = local_node(model_dir=str(dense_grasp_model))
    assert node.autostart(), node._error
    frame = np.full((48, 64, 3), 110, np.uint8)
    frame[10:30, 30:50] = (220, 40, 40)
    image = numpy_to_image(frame, "rgb8", "test")
    one = finish(node.queries.on_is_graspable(IsGraspable.Request(object_name="red circle", image=image),
                                              IsGraspable.Response()))
    many = finish(node.queries.on_query_objects(
        QueryObjects.Request(object_names=["red circle", "teapot"], image=image), QueryObjects.Response()))
    assert one.success and many.success, (one.message, many.message)
    for where in [one.location, *many.locations]:
        assert where.valid and 0.0 < where.confidence <= 1.0
        assert 8.0 <= where.x_min <= where.u <= where.x_max <= 56.0  # the centre square of the 64x48 frame
        assert 0.0 <= where.y_min <= where.v <= where.y_max <= 48.0
    assert len(many.locations) == 2
    lines = answer_lines(many)
    assert lines[0].startswith("red circle: ") and ", seen at pixel (" in lines[0] and "confidence" in lines[0]
