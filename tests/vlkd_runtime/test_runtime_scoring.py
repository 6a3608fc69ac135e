"""The numpy answer arithmetic equals the trained scorer's (`training.grasp.model.GraspScorer`): logits of global and
dense features, with and without negative prompts, and the located boxes."""
import numpy as np
import pytest
import torch

from training.grasp.model import GraspScorer
from vlkd_runtime.scoring import Scorer, peak_boxes


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("negatives", [False, True])
def test_logits_and_boxes_are_the_scorers(dense, negatives):
    rng = np.random.default_rng(int(dense) * 2 + int(negatives))
    shape = (5, 1 + 9, 32) if dense else (5, 32)
    feats = rng.standard_normal(shape).astype(np.float32)
    pos = rng.standard_normal((7, 32)).astype(np.float32)
    neg = rng.standard_normal((7, 32)).astype(np.float32) if negatives else None
    local = 0.78 if dense else None
    ours = Scorer(11.548, -0.964, local)
    ref = GraspScorer(11.548, -0.964, local)
    want, boxes = ref.score_and_locate(torch.from_numpy(feats), torch.from_numpy(pos),
                                       None if neg is None else torch.from_numpy(neg))
    logits, where = ours.score_and_locate(feats, pos, neg)
    assert logits.dtype == np.float32 and np.abs(logits - want.numpy()).max() < 1e-4 * np.abs(logits).max()
    assert float(ours.scale) == pytest.approx(ref.scale, rel=2e-7)  # exp in float32: the same to an ulp
    if dense:
        assert np.array_equal(where[..., :6], boxes.numpy()[..., :6])  # the same cells
        assert np.abs(where[..., 6] - boxes.numpy()[..., 6]).max() < 1e-5  # the peak's attention weight
    else:
        assert where is None and boxes is None


def test_locating_needs_a_square_map():
    with pytest.raises(ValueError, match="square feature map of dense features, got 8 locations"):
        peak_boxes(np.ones((1, 8, 2), np.float32))
    with pytest.raises(ValueError, match="dense features .* need a scorer with local_weight"):
        Scorer(10.0, 0.0).logits(np.ones((1, 10, 4), np.float32), np.ones((2, 4), np.float32), None)
