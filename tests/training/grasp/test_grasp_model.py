"""Grasp scoring: the prompt-pair scorer, threshold calibration and the metrics behind Table 11."""
import math

import pytest
import torch
import torch.nn.functional as F

from training.grasp.model import GraspScorer, accuracy_score, binary_counts, calibrate_threshold, f1_score, roc_auc


def test_scorer_is_the_papers_prompt_pair_softmax_at_init():
    feats, pos, neg = (F.normalize(torch.randn(n, 16), dim=-1) for n in (3, 5, 5))
    logits = GraspScorer()(feats, pos, neg)
    two_way = torch.softmax(torch.stack([feats @ pos.T, feats @ neg.T]) / 0.07, dim=0)[0]
    assert torch.allclose(torch.sigmoid(logits), two_way, atol=1e-5)
    assert GraspScorer(bias=1.0)(feats, pos, None).shape == (3, 5)


def test_threshold_calibration_and_metrics():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.2])
    targets = torch.tensor([1, 1, 0, 0, 1])
    threshold, f1 = calibrate_threshold(scores, targets, "f1")
    assert 0.3 < threshold < 0.8 and f1 == pytest.approx(0.8)
    assert calibrate_threshold(scores, targets, "accuracy")[1] == pytest.approx(0.8)
    counts = binary_counts(scores >= threshold, targets.bool())
    assert counts == {"tp": 2, "fp": 0, "fn": 1, "tn": 2}
    assert f1_score(counts) == pytest.approx(0.8) and accuracy_score(counts) == pytest.approx(0.8)
    assert math.isnan(f1_score(binary_counts(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))))
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0, 1, 1])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'f1' or 'accuracy'"):
        calibrate_threshold(scores, targets, "auc")
