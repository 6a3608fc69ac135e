"""The numpy observation transform equals training's torch one (what the weights were trained on): RGB resized
with torch's antialiased bilinear weights bit for bit (sums within float32 rounding), depth nearest, the same
refusals."""
import re

import numpy as np
import pytest

from training.grasp.data import ObservationTransform as TorchTransform
from vlkd_runtime.observation import ObservationTransform, _aa_weights

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
VIEWS = ["base_rgb", "base_depth", "hand_rgb", "hand_depth"]


@pytest.mark.parametrize("h, w, size", [(480, 640, 96), (48, 48, 96), (97, 200, 96), (1080, 1920, 224),
                                        (33, 47, 96), (96, 300, 96), (96, 96, 96)])
def test_every_view_is_what_training_feeds_the_student(h, w, size):
    rng = np.random.default_rng(h * w)
    metres = rng.uniform(0, 3, (h, w)).astype(np.float32)
    metres[0, :5] = np.nan
    obs = {"base_rgb": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "hand_rgb": rng.integers(0, 256, (h, w, 3),
                                                                                                   dtype=np.uint8),
           "base_depth": rng.integers(0, 3000, (h, w), dtype=np.uint16), "hand_depth": metres[..., None]}
    ours = ObservationTransform(VIEWS, size, MEAN, STD, 2.0)(obs)
    ref = TorchTransform(VIEWS, size, MEAN, STD, 2.0)(obs).numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (8, size, size)
    assert np.abs(ours - ref).max() < 2e-6
    depth = [3, 7]
    assert np.array_equal(ours[depth], ref[depth])  # nearest: the same pixels, the same arithmetic


def test_the_resize_weights_are_torchs():
    import torch
    import torch.nn.functional as F

    for n_in, n_out in [(97, 96), (1080, 224), (48, 96), (480, 96), (200, 96)]:
        eye = torch.eye(n_in)[None, None]
        weights = F.interpolate(eye, size=(n_out, n_in), mode="bilinear", antialias=True, align_corners=False)
        assert np.array_equal(_aa_weights(n_in, n_out), weights[0, 0].numpy())


def test_malformed_views_are_refused_as_training_refuses_them():
    ours, ref = ObservationTransform(VIEWS, 96, MEAN, STD, 2.0), TorchTransform(VIEWS, 96, MEAN, STD, 2.0)
    good = {"base_rgb": np.zeros((8, 8, 3), np.uint8), "hand_rgb": np.zeros((8, 8, 3), np.uint8),
            "base_depth": np.zeros((8, 8), np.uint16), "hand_depth": np.zeros((8, 8), np.uint16)}
    for bad in [{**good, "base_rgb": np.zeros((8, 8, 3), np.float32)}, {**good, "hand_rgb": np.zeros((8, 8))},
                {**good, "base_depth": np.zeros((8, 8), np.int64)}, {**good, "hand_depth": np.zeros((0, 8), np.uint16)},
                {"base_rgb": good["base_rgb"]}, [good]]:
        with pytest.raises(ValueError) as expected:
            ref(bad)
        with pytest.raises(ValueError, match="^" + re.escape(str(expected.value)) + "$"):
            ours(bad)
