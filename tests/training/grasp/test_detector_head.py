"""The detector head: the student's dense output and the serving arithmetic the trainer shares."""
import numpy as np
import pytest
import torch

from training.grasp.model import DetectorScorer as TorchDetectorScorer
from training.students import Student, StudentConfig, StudentError
from vlkd_runtime.scoring import FIELDS, DetectorScorer


def test_detector_student_gives_one_row_per_stride8_cell():
    model = Student(StudentConfig(arch="resnet18", head="detector", fpn_dim=16), embed_dim=12, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 8 * 8, FIELDS + 12)
    assert torch.allclose(out[..., FIELDS:].norm(dim=-1), torch.ones(2, 64), atol=1e-4)
    assert (out[..., 6:10] >= 0).all() and (out[..., 4:6].abs() <= 0.5).all()


def test_detector_head_refuses_a_vit_backbone():
    with pytest.raises(StudentError, match="detector"):
        StudentConfig(arch="vit_b_32", head="detector").validate()


def test_numpy_and_torch_detector_scorers_agree():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 16, FIELDS + 8)).astype(np.float32)
    feats[..., 4:6] = 0.4 * np.tanh(feats[..., 4:6])
    feats[..., 6:10] = 0.1 * np.abs(feats[..., 6:10])
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    torch_scorer = TorchDetectorScorer(match_scale=20.0, bias=-2.0)
    logits, boxes = torch_scorer.score_and_locate(torch.from_numpy(feats), torch.from_numpy(queries), None)
    served = DetectorScorer(torch_scorer.scale, float(torch_scorer.bias.detach()))
    np_logits, np_boxes = served.score_and_locate(feats, queries, None)
    np.testing.assert_allclose(np_logits, logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(np_boxes, boxes.numpy(), atol=1e-4)
    # the answer falls with the objectness of the chosen cell: a cell that is surely no object cannot answer "yes"
    feats[..., 0] = -30.0
    assert (served.logits(feats, queries, None) < -25).all()
