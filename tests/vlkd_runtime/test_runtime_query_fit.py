"""The query fit's ranking AUC is scikit-learn's ROC AUC (ties counted half), without importing scikit-learn."""
import numpy as np
from sklearn.metrics import roc_auc_score

from vlkd_runtime.query_fit import ranking_auc


def test_ranking_auc_is_roc_auc():
    rng = np.random.default_rng(0)
    for i in range(200):
        pos, neg = rng.integers(0, 5, rng.integers(1, 20)).astype(float), rng.integers(0, 5, rng.integers(1, 30))
        if i % 2:  # no ties
            pos, neg = rng.standard_normal(len(pos)), rng.standard_normal(len(neg))
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        assert abs(ranking_auc(pos, neg) - roc_auc_score(labels, np.r_[pos, neg])) < 1e-12
    assert ranking_auc(np.array([1.0]), np.array([1.0])) == 0.5 and np.isnan(ranking_auc(np.array([]), np.ones(2)))
