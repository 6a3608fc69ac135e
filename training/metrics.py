"""The paper's analysis metrics: M_rel, M_neigh, M_vlalign, and text-space geometry of label features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_features(name: str, x: Tensor, min_rows: int = 1) -> None:
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(f"{name} must be a ({min_rows}+ rows, D>0) tensor, got shape {tuple(x.shape)}")


def _check_pair(student: Tensor, teacher: Tensor, min_rows: int = 1) -> None:
    _check_features("student", student, min_rows)
    _check_features("teacher", teacher, min_rows)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must have the same (N, D) shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")


@torch.no_grad()
def m_rel(student: Tensor, teacher: Tensor) -> float:
    """M_rel: fraction of i whose nearest teacher feature to student_i is teacher_i."""
    _check_pair(student, teacher)
    nearest = torch.cdist(student, teacher).argmin(dim=1)
    return (nearest == torch.arange(len(student), device=student.device)).float().mean().item()


def _knn(x: Tensor, k: int) -> Tensor:
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).indices


@torch.no_grad()
def m_neigh(student: Tensor, teacher: Tensor, k: int) -> float:
    """M_neigh: mean |kNN_S(i) ∩ kNN_T(i)| / k over i (self excluded, k clamped to N-1)."""
    _check_pair(student, teacher, min_rows=2)
    _check_k(k)
    k = min(k, len(student) - 1)
    knn_s, knn_t = _knn(student, k), _knn(teacher, k)
    overlap = (knn_s[:, :, None] == knn_t[:, None, :]).any(dim=2).sum(dim=1)
    return (overlap.float() / k).mean().item()


@torch.no_grad()
def m_vlalign(student: Tensor, teacher: Tensor, text: Tensor, k: int) -> float:
    """M_vlalign: mean inversions of student distances to the teacher's k nearest texts (k clamped to C)."""
    _check_pair(student, teacher)
    _check_features("text", text)
    if text.shape[1] != student.shape[1]:
        raise ValueError(f"text must be (C, {student.shape[1]}), got {tuple(text.shape)}")
    _check_k(k)
    k = min(k, len(text))
    teacher_dist = torch.cdist(teacher, text)
    order = teacher_dist.topk(k, dim=1, largest=False, sorted=True).indices
    student_dist = torch.cdist(student, text).gather(1, order)
    first, second = torch.triu_indices(k, k, offset=1, device=student.device)
    inversions = (student_dist[:, first] > student_dist[:, second]).sum(dim=1)
    return inversions.float().mean().item()


@torch.no_grad()
def text_singular_values(text: Tensor, top: int | None = None) -> Tensor:
    """Singular values (descending) of the mean-centred text rows, the first ``top`` if given."""
    _check_features("text", text)
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1 or None, got {top!r}")
    values = torch.linalg.svdvals(text - text.mean(dim=0, keepdim=True))
    return values if top is None else values[:top]


@torch.no_grad()
def mean_pairwise_cosine(text: Tensor) -> float:
    """Mean cosine similarity over all ordered pairs i != j of text rows."""
    _check_features("text", text, min_rows=2)
    unit = F.normalize(text, dim=1)
    sim = unit @ unit.T
    n = len(text)
    return ((sim.sum() - sim.diagonal().sum()) / (n * (n - 1))).item()
