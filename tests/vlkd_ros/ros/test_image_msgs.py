"""vlkd_ros.ros.image_msgs: sensor_msgs/Image <-> numpy for every supported encoding, padding, endianness and errors."""
import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 message wheels (requirements-ros.txt)")

from vlkd_ros.ros.image_msgs import (ImageFormatError, image_to_depth, image_to_rgb,  # noqa: E402
                                numpy_to_image)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding, stored", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full((5, 7), 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full((5, 7), 9, np.uint8)])),
])
def test_colour_encodings_come_back_as_rgb(encoding: str, stored: np.ndarray) -> None:
    """Each colour encoding's channels are reordered to RGB."""
    out = image_to_rgb(numpy_to_image(np.ascontiguousarray(stored), encoding))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_repeated_to_three_channels() -> None:
    """A grey frame becomes R = G = B."""
    grey = RGB[:, :, 0]
    out = image_to_rgb(numpy_to_image(grey, "mono8"))
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


def test_row_padding_in_step_is_skipped() -> None:
    """step > width * 3: the padding bytes at each row's end are not pixels."""
    msg = numpy_to_image(RGB, "rgb8")
    msg.step = 7 * 3 + 5
    msg.data = b"".join(RGB[r].tobytes() + b"\xff" * 5 for r in range(5))
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
@pytest.mark.parametrize("big_endian", [False, True])
def test_depth_encodings_and_byte_order(encoding: str, dtype: type, big_endian: bool) -> None:
    """16UC1 millimetres and 32FC1 metres, little- or big-endian on the wire, come back native."""
    depth = (RNG.random((4, 6)) * 3000).astype(dtype)
    msg = numpy_to_image(depth, encoding)
    if big_endian:
        msg.is_bigendian = 1
        msg.data = depth.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    out = image_to_depth(msg)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize("mutate, match", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported colour encoding 'yuv422'; valid: rgb8"),
    (lambda m: setattr(m, "encoding", "16UC1"), "unsupported colour encoding '16UC1'"),
    (lambda m: setattr(m, "data", bytes(m.data)[:50]), "data has 50 bytes but a 7x5 'rgb8' image"),
    (lambda m: setattr(m, "step", 10), "step 10 is smaller than width"),
    (lambda m: setattr(m, "width", 0), "image is 0x5"),
])
def test_bad_colour_images_say_what_is_wrong(mutate, match: str) -> None:
    """Wrong encoding, short data, short step and empty size raise ImageFormatError with the values."""
    msg = numpy_to_image(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageFormatError, match=match):
        image_to_rgb(msg)


def test_depth_refuses_colour_encoding() -> None:
    """A colour frame on the depth path names the valid depth encodings."""
    with pytest.raises(ImageFormatError, match="unsupported depth encoding 'rgb8'; valid: 16UC1, 32FC1"):
        image_to_depth(numpy_to_image(RGB, "rgb8"))


def test_pixel_limit_and_large_frame_shrink() -> None:
    """max_pixels refuses big frames; shrink_to area-resizes a 4K frame to the asked shorter side."""
    frame = np.zeros((2160, 3840, 3), np.uint8)
    frame[:, 1920:] = 200
    msg = numpy_to_image(frame, "bgr8")
    with pytest.raises(ImageFormatError, match="8294400 pixels; the limit is 1000000"):
        image_to_rgb(msg, max_pixels=1_000_000)
    small = image_to_rgb(msg, shrink_to=224)
    assert small.shape == (224, 398, 3)
    assert small[:, :190].max() == 0 and small[:, 210:].min() == 200
    assert image_to_rgb(numpy_to_image(RGB, "rgb8"), shrink_to=224).shape == RGB.shape


@pytest.mark.parametrize("channels, encoding", [(3, "rgb8"), (4, "bgra8"), (1, "mono8")])
def test_shrinking_averages_each_output_pixels_area(channels: int, encoding: str) -> None:
    """Colour frames shrink by an area average: by an integer factor every output pixel is the mean of its block of
    source pixels (within one level), by any factor a flat frame stays flat and the frame's mean level stays."""
    order = {"rgb8": [0, 1, 2], "bgra8": [2, 1, 0], "mono8": [0, 0, 0]}[encoding]
    frame = RNG.integers(0, 256, (480, 640, channels), dtype=np.uint8)
    blocks = frame[:, :, order].reshape(120, 4, 160, 4, 3).mean((1, 3))
    out = image_to_rgb(numpy_to_image(frame, encoding), shrink_to=120)
    assert out.shape == (120, 160, 3) and np.abs(out - blocks).max() <= 1.0  # Pillow sums in fixed point
    for height, width, side in ((480, 640, 128), (97, 203, 13), (300, 451, 299)):
        frame = RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
        out = image_to_rgb(numpy_to_image(frame, encoding), shrink_to=side)
        assert min(out.shape[:2]) == side
        assert abs(float(out.mean()) - float(frame[:, :, order].mean())) < 1.0
        flat = np.full((height, width, channels), 77, np.uint8)
        assert (image_to_rgb(numpy_to_image(flat, encoding), shrink_to=side) == 77).all()


@pytest.mark.parametrize("encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_depth_shrinks_to_the_nearest_pixel_as_opencv_does(encoding: str, dtype: type) -> None:
    """Depth is never averaged across an object's edge: each output pixel is OpenCV's INTER_NEAREST source pixel."""
    for height, width, side in ((480, 640, 128), (1080, 1920, 224), (97, 203, 13)):
        depth = (RNG.random((height, width)) * 60000).astype(dtype)
        scale = side / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        assert np.array_equal(image_to_depth(numpy_to_image(depth, encoding), shrink_to=side),
                              cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST))


def test_numpy_to_image_checks_shape_and_dtype() -> None:
    """The array must match the encoding's channels and dtype."""
    with pytest.raises(ImageFormatError, match=r"rgb8 needs an HxWx3 uint8 array.*got shape \(5, 7\) uint8"):
        numpy_to_image(RGB[:, :, 0], "rgb8")
    with pytest.raises(ImageFormatError, match="unsupported encoding 'jpeg'"):
        numpy_to_image(RGB, "jpeg")
