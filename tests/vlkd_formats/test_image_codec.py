"""PNG writing: RGB and 16-bit depth round trips, and a full disk reported as a resumable StorageError."""
import errno

import numpy as np
import pytest

from vlkd_formats import image_codec as image_io
from vlkd_formats.errors import StorageError


def test_round_trips(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    image_io.write_rgb_png(tmp_path / "a" / "rgb.png", rgb)
    assert np.array_equal(image_io.read_rgb_png(tmp_path / "a" / "rgb.png"), rgb)
    depth = np.array([[0, 1, 1500], [40000, 65535, 70000]], dtype=np.int32)[..., None]
    image_io.write_depth_png(tmp_path / "d.png", depth)
    assert image_io.read_depth_png(tmp_path / "d.png").tolist() == [[0, 1, 1500], [40000, 65535, 65535]]


def test_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io, "atomic_write", full)
    with pytest.raises(StorageError, match="disk full.*rerun the same command"):
        image_io.write_rgb_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert not (tmp_path / "x.png").exists()
