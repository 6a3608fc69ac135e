"""The query fit: its ranking AUC is scikit-learn's ROC AUC (ties counted half), without importing scikit-learn; a
detector's held-out locations cut to the most object-like keep what the fit needs."""
import numpy as np
from sklearn.metrics import roc_auc_score

from vlkd_runtime.query_fit import detector_negative_rows, most_object_like, ranking_auc
from vlkd_runtime.scoring import FIELDS, DetectorScorer


def test_ranking_auc_is_roc_auc():
    rng = np.random.default_rng(0)
    for i in range(200):
        pos, neg = rng.integers(0, 5, rng.integers(1, 20)).astype(float), rng.integers(0, 5, rng.integers(1, 30))
        if i % 2:  # no ties
            pos, neg = rng.standard_normal(len(pos)), rng.standard_normal(len(neg))
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        assert abs(ranking_auc(pos, neg) - roc_auc_score(labels, np.r_[pos, neg])) < 1e-12
    assert ranking_auc(np.array([1.0]), np.array([1.0])) == 0.5 and np.isnan(ranking_auc(np.array([]), np.ones(2)))


def test_most_object_like_locations_keep_the_negatives_and_the_answers_that_peak_there():
    """Detector features cut to their most object-like locations give the fit the same negatives, and each frame
    the same answer wherever its best location is among those kept."""
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((6, 256, FIELDS + 8)).astype(np.float32)
    feats[:, :, :2] = np.round(feats[:, :, :2], 1)  # ties in the prior, kept in location order
    kept = most_object_like(feats, 64)
    assert kept.shape == (6, 64, FIELDS + 8)
    assert np.array_equal(detector_negative_rows(kept, 8), detector_negative_rows(feats, 8))
    scorer, query = DetectorScorer(10.0, -2.0), rng.standard_normal((1, 8)).astype(np.float32)
    full, cut = scorer.logits(feats, query, None), scorer.logits(kept, query, None)
    best = scorer.log_scores(feats, query, None)[..., 0].argmax(1)
    prior = feats[..., 0] + feats[..., 1]
    among = [best[i] in np.argsort(-prior[i], kind="stable")[:64] for i in range(6)]
    assert all(np.array_equal(full[i], cut[i]) for i in range(6) if among[i])
    assert np.all(cut <= full)
