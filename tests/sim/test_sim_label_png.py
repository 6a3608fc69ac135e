"""Label images (per-object masks) through the one image codec: 8-bit single-channel PNG, values kept exactly."""
import numpy as np
import pytest

from vlkd_formats.image_codec import read_label_png, write_label_png, write_rgb_png


def test_round_trip_keeps_every_value(tmp_path):
    labels = np.arange(256, dtype=np.int64).reshape(16, 16)
    path = write_label_png(tmp_path / "seg.png", labels)
    back = read_label_png(path)
    assert back.dtype == np.uint8 and back.shape == (16, 16) and np.array_equal(back, labels)
    assert np.array_equal(read_label_png(write_label_png(tmp_path / "b.png", labels[..., None] % 3)), labels % 3)


@pytest.mark.parametrize("bad, message", [
    (np.full((4, 4), 256), "0..255"),
    (np.full((4, 4), -1), "0..255"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "HxW integers"),
    (np.zeros((4, 4), dtype=np.float32), "HxW integers"),
])
def test_bad_label_images_are_refused(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_label_png(tmp_path / "x.png", bad)
    assert not (tmp_path / "x.png").exists()


def test_a_colour_image_is_not_read_as_labels(tmp_path):
    path = write_rgb_png(tmp_path / "rgb.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="8-bit single-channel"):
        read_label_png(path)
