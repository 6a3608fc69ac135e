"""The query fit: its ranking AUC is scikit-learn's ROC AUC (ties counted half), without importing scikit-learn; a
detector's held-out locations cut to the most object-like keep what the fit needs."""
import numpy as np
from sklearn.metrics import roc_auc_score

from vlkd_runtime.query_fit import detector_negative_rows, detector_shot_regions, most_object_like, ranking_auc
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


def test_shots_and_negatives_read_the_distilled_embedding_of_a_model_with_two():
    """On features with a second, distilled embedding (FIELDS + 2D) a query is fitted on that one: the shot's row
    and the negative rows are its last D channels, at the locations the single-embedding rule picks."""
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((2, 16, FIELDS + 2 * 8)).astype(np.float32)
    rows = detector_negative_rows(feats, 8, per_frame=4)
    assert rows.shape == (8, 8)
    assert np.array_equal(rows, detector_negative_rows(np.concatenate([feats[..., :FIELDS], feats[..., -8:]], -1), 8,
                                                       per_frame=4))
    regions, said = detector_shot_regions(feats, [(0.0, 0.0, 0.5, 0.5), None], feats[..., 0], 8)
    best = int(np.argmax(feats[1, :, 0]))
    assert np.array_equal(regions[1], feats[1, best, -8:]) and "answer peaks" in said[1]
    assert regions.shape == (2, 8)
