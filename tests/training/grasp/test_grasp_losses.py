"""Multi-label grasp losses: masked ASL/BCE, which distillation terms a grasp config may combine with them."""
import pytest
import torch
import torch.nn.functional as F

from training.grasp.losses import GraspBatch, build_grasp_loss
from training.losses import DistillBatch


def _batch(logits, targets, mask):
    b, n = logits.shape
    feats = F.normalize(torch.randn(b, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    return GraspBatch(student=feats, teacher_img=feats.flip(0), text=F.normalize(torch.randn(n, 8), dim=-1),
                      labels=torch.zeros(b, dtype=torch.long), logits=logits, targets=targets, mask=mask)


def test_masked_pairs_do_not_count_and_asl_spares_easy_negatives():
    logits = torch.tensor([[3.0, -3.0], [-3.0, 20.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])  # the wrong, confident (1, 1) pair is unknown
    per_pair = build_grasp_loss([{"type": "bce", "params": {"reduction": "pair"}}])
    total, terms = per_pair(_batch(logits, targets, mask))
    expected = F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    assert torch.allclose(total, expected) and set(terms) == {"bce"}
    per_image = build_grasp_loss([{"type": "bce"}])(_batch(logits, targets, mask))[0]
    assert torch.allclose(per_image, expected * 3 / 2)  # 3 known pairs summed per image, over 2 images
    asl = build_grasp_loss([{"type": "asl", "params": {"gamma_neg": 4.0, "clip": 0.05}}])
    easy = asl(_batch(torch.tensor([[-3.0]]), torch.tensor([[0.0]]), torch.tensor([[True]])))[0]
    hard = asl(_batch(torch.tensor([[3.0]]), torch.tensor([[0.0]]), torch.tensor([[True]])))[0]
    assert easy < 1e-6 < hard


def test_grasp_loss_lists_are_checked():
    loss = build_grasp_loss([{"type": "asl"}, {"type": "im_cst", "weight": 0.5}])
    total, terms = loss(_batch(torch.zeros(3, 2), torch.ones(3, 2), torch.ones(3, 2, dtype=torch.bool)))
    assert set(terms) == {"asl", "im_cst"} and torch.isfinite(total)
    with pytest.raises(ValueError, match="do not apply to clutter"):
        build_grasp_loss([{"type": "asl"}, {"type": "vlprox"}])
    with pytest.raises(ValueError, match="exactly one multi-label term"):
        build_grasp_loss([{"type": "im_cst"}])
    with pytest.raises(ValueError, match=r"GraspBatch.mask must be \(3, 2\)"):
        _batch(torch.zeros(3, 2), torch.ones(3, 2), torch.ones(3, 1, dtype=torch.bool))
    plain = DistillBatch(student=torch.ones(1, 2), teacher_img=torch.ones(1, 2), text=torch.ones(1, 2),
                         labels=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a GraspBatch"):
        build_grasp_loss([{"type": "bce"}])(plain)
