"""The one image codec: RGB and 16-bit depth round trips, pixel-exact agreement with the decoders sim/ (OpenCV) and
training/ (Pillow) used before on the PNGs the collectors write, byte-identical PNG files, and a full disk reported
as a resumable StorageError."""
import errno

import cv2
import numpy as np
import pytest
from PIL import Image

from vlkd_formats import image_codec as image_io
from vlkd_formats.errors import StorageError


def test_round_trips(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    image_io.write_rgb_png(tmp_path / "a" / "rgb.png", rgb)
    assert np.array_equal(image_io.read_rgb(tmp_path / "a" / "rgb.png"), rgb)
    depth = np.array([[0, 1, 1500], [40000, 65535, 70000]], dtype=np.int32)[..., None]
    image_io.write_depth_png(tmp_path / "d.png", depth)
    assert image_io.read_depth(tmp_path / "d.png").tolist() == [[0, 1, 1500], [40000, 65535, 65535]]


def test_collector_pngs_decode_alike_with_opencv_and_pillow(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (48, 64), dtype=np.uint16)
    rgb_path = image_io.write_rgb_png(tmp_path / "base_rgb.png", rgb)
    depth_path = image_io.write_depth_png(tmp_path / "base_depth.png", depth)
    # what sim/card.py (OpenCV) and training/ (Pillow convert("RGB")) decoded before there was one codec
    opencv_rgb = cv2.cvtColor(cv2.imread(str(rgb_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    with Image.open(rgb_path) as img:
        pillow_rgb = np.asarray(img.convert("RGB"))
    assert np.array_equal(image_io.read_rgb(rgb_path), opencv_rgb)
    assert np.array_equal(image_io.read_rgb(rgb_path), pillow_rgb)
    assert np.array_equal(np.asarray(image_io.open_rgb(rgb_path)), rgb)
    opencv_depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    assert image_io.read_depth(depth_path).dtype == np.uint16
    assert np.array_equal(image_io.read_depth(depth_path), opencv_depth)
    assert np.array_equal(image_io.read_depth(depth_path), depth)


def test_png_bytes_are_what_opencv_wrote_before(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    before = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert image_io.encode_png(rgb) == before
    assert image_io.write_rgb_png(tmp_path / "x.png", rgb).read_bytes() == before
    depth = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    assert image_io.write_depth_png(tmp_path / "d.png", depth).read_bytes() == cv2.imencode(".png", depth)[1].tobytes()


def test_other_files_decode_as_pillow_converts_them(tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (6, 7, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg", quality=80)
    Image.fromarray(rng.integers(0, 65536, (6, 7), dtype=np.uint16)).save(tmp_path / "grey16.png")
    for name in ("rgba.png", "palette.png", "photo.jpg", "grey16.png"):
        with Image.open(tmp_path / name) as img:
            expected = np.asarray(img.convert("RGB"))
        got = image_io.read_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (6, 7, 3) and np.array_equal(got, expected), name
    # 16-bit grey is where the two libraries part: Pillow saturates, OpenCV scales; the codec keeps Pillow's
    # (what training always read), and the collectors never write 16-bit colour images.
    assert not np.array_equal(image_io.read_rgb(tmp_path / "grey16.png"),
                              cv2.cvtColor(cv2.imread(str(tmp_path / "grey16.png")), cv2.COLOR_BGR2RGB))


def test_depth_variants_and_errors(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "d8.png")
    assert image_io.read_depth(tmp_path / "d8.png").dtype == np.uint16
    image_io.write_rgb_png(tmp_path / "rgb.png", np.full((4, 4, 3), (7, 8, 9), np.uint8))
    assert image_io.read_depth(tmp_path / "rgb.png").tolist() == [[7] * 4] * 4  # the first channel
    Image.fromarray(np.full((4, 4), 1.5, np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="16-bit PNG in millimetres"):
        image_io.read_depth(tmp_path / "f.tiff")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError):
        image_io.read_rgb(tmp_path / "broken.png")


def test_image_suffixes():
    assert image_io.is_image_file("a/B.PNG") and image_io.is_image_file("x.webp")
    assert not image_io.is_image_file("a.txt")
    assert all(s == s.lower() and s.startswith(".") for s in image_io.IMAGE_SUFFIXES)


def test_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io, "atomic_write", full)
    with pytest.raises(StorageError, match="disk full.*rerun the same command"):
        image_io.write_rgb_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert not (tmp_path / "x.png").exists()
