"""Analysis metrics on hand-built cases with known answers, and against brute-force loops on random data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.metrics import m_neigh, m_rel, m_vlalign, mean_pairwise_cosine, text_singular_values


def unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def on_circle(degrees: list[float]) -> torch.Tensor:
    return unit([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


def random_unit(seed: int, n: int, d: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)


def loop_neigh(student: np.ndarray, teacher: np.ndarray, k: int) -> float:
    def knn(x: np.ndarray, i: int) -> set[int]:
        others = sorted((j for j in range(len(x)) if j != i), key=lambda j: np.linalg.norm(x[i] - x[j]))
        return set(others[:k])

    return float(np.mean([len(knn(student, i) & knn(teacher, i)) / k for i in range(len(student))]))


def loop_vlalign(student: np.ndarray, teacher: np.ndarray, text: np.ndarray, k: int) -> float:
    counts = []
    for s, t in zip(student, teacher):
        nearest = sorted(range(len(text)), key=lambda c: np.linalg.norm(t - text[c]))[:k]
        d_s = [np.linalg.norm(s - text[c]) for c in nearest]
        counts.append(sum(d_s[a] > d_s[b] for a, b in itertools.combinations(range(k), 2)))
    return float(np.mean(counts))


def test_identical_spaces_give_perfect_scores() -> None:
    feats, text = random_unit(0, 6), random_unit(1, 5)
    assert m_rel(feats, feats) == 1.0
    assert m_neigh(feats, feats, k=2) == 1.0
    assert m_vlalign(feats, feats, text, k=5) == 0.0


def test_m_rel_is_half_when_two_of_four_students_swap_teachers() -> None:
    teacher = on_circle([0, 90, 180, 270])
    student = teacher[[0, 1, 3, 2]]
    assert m_rel(student, teacher) == 0.5


def test_m_neigh_counts_shared_nearest_neighbours() -> None:
    teacher = on_circle([0, 10, 90, 100])  # neighbours 0<->1, 2<->3
    student = on_circle([0, 10, 90, 320])  # neighbours 0<->1, 2->1, 3->0
    assert m_neigh(student, teacher, k=1) == 0.5
    assert m_neigh(student, teacher, k=10) == 1.0  # clamped to N-1: every other point is a neighbour


def test_m_vlalign_counts_reverse_pairs() -> None:
    text = torch.eye(4, dtype=torch.float64)  # distance to e_c falls as component c grows
    teacher = unit([[0.7, 0.5, 0.4, 0.3], [0.7, 0.5, 0.4, 0.3]])
    student = unit([[0.3, 0.4, 0.5, 0.7], [0.5, 0.7, 0.4, 0.3]])  # fully reversed; one adjacent swap
    assert m_vlalign(student, teacher, text, k=4) == (6 + 1) / 2
    assert m_vlalign(student, teacher, text, k=3) == (3 + 1) / 2
    assert m_vlalign(student, teacher, text, k=99) == (6 + 1) / 2  # clamped to C


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbour_metrics_match_brute_force_loops(seed: int) -> None:
    student, teacher, text = random_unit(seed, 7), random_unit(seed + 10, 7), random_unit(seed + 20, 6)
    s, t, c = student.numpy(), teacher.numpy(), text.numpy()
    assert m_neigh(student, teacher, k=3) == pytest.approx(loop_neigh(s, t, 3))
    assert m_vlalign(student, teacher, text, k=4) == pytest.approx(loop_vlalign(s, t, c, 4))


def test_text_singular_values_of_centred_basis() -> None:
    values = text_singular_values(torch.eye(3, dtype=torch.float64))
    assert torch.allclose(values, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert text_singular_values(torch.eye(3), top=2).shape == (2,)
    scaled = text_singular_values(torch.diag(torch.tensor([3.0, 1.0, 2.0])) + 5.0)
    assert torch.all(scaled[:-1] >= scaled[1:])


def test_mean_pairwise_cosine() -> None:
    assert mean_pairwise_cosine(torch.eye(3)) == 0.0
    v = [1.0, 2.0, 2.0]
    assert mean_pairwise_cosine(unit([v, v, [-x for x in v]])) == pytest.approx(-1 / 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: m_rel(torch.zeros(3, 4), torch.zeros(2, 4)), r"\(3, 4\) and \(2, 4\)"),
        (lambda: m_rel(torch.zeros(3, 4), torch.zeros(3, 5)), r"\(3, 4\) and \(3, 5\)"),
        (lambda: m_rel(torch.zeros(0, 4), torch.zeros(0, 4)), r"\(0, 4\)"),
        (lambda: m_neigh(torch.zeros(3, 4), torch.zeros(3, 4), k=0), "k must be >= 1, got 0"),
        (lambda: m_neigh(torch.zeros(1, 4), torch.zeros(1, 4), k=1), r"\(1, 4\)"),
        (lambda: m_vlalign(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(5, 3), k=1), r"\(5, 3\)"),
        (lambda: text_singular_values(torch.zeros(3, 4), top=0), "top must be >= 1"),
        (lambda: mean_pairwise_cosine(torch.zeros(1, 4)), r"\(1, 4\)"),
    ],
)
def test_bad_inputs_raise_value_error_with_shapes(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
