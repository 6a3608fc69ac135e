"""Distillation loss terms (L_cls, L_mse, L_im-cst, L_vlprox, L_cap, ComKD terms) as registered, weighted
terms: a config lists ``{type, weight, params}`` and :func:`build_loss` turns it into one module."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLIP_TAU = 0.07


@dataclass
class DistillBatch:
    """One batch of L2-normalised features: student (B, D), teacher images (B, D), label texts (C, D)."""

    student: Tensor
    teacher_img: Tensor
    text: Tensor
    labels: Tensor
    captions: Tensor | None = None

    def __post_init__(self) -> None:
        b, d = _check_2d("student", self.student)
        if self.teacher_img.shape != (b, d):
            raise ValueError(
                f"teacher_img must have the student's shape {(b, d)}, got {tuple(self.teacher_img.shape)}"
            )
        if self.text.ndim != 2 or self.text.shape[1] != d or self.text.shape[0] == 0:
            raise ValueError(f"text must be (C>0, {d}), got {tuple(self.text.shape)}")
        if self.labels.shape != (b,):
            raise ValueError(f"labels must be ({b},), got {tuple(self.labels.shape)}")
        if self.captions is not None and self.captions.shape != (b, d):
            raise ValueError(f"captions must be {(b, d)}, got {tuple(self.captions.shape)}")


def _check_2d(name: str, x: Tensor) -> tuple[int, int]:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (B, D) tensor, got shape {tuple(x.shape)}")
    return x.shape[0], x.shape[1]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


class LossTerm(nn.Module):
    """One distillation loss term: ``forward(batch) -> scalar``."""

    def forward(self, batch: DistillBatch) -> Tensor:
        """Return the scalar loss for ``batch``."""
        raise NotImplementedError


LOSSES: dict[str, type[LossTerm]] = {}


def register_loss(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    """Class decorator registering a :class:`LossTerm` under ``name`` in :data:`LOSSES`."""

    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered to {LOSSES[name].__name__}")
        LOSSES[name] = cls
        return cls

    return decorator


@register_loss("cls")
class ClsLoss(LossTerm):
    """L_cls = CE(student @ text.T / tau, labels)."""

    def __init__(self, tau: float = CLIP_TAU) -> None:
        super().__init__()
        _check_positive("tau", tau)
        self.tau = tau

    def forward(self, batch: DistillBatch) -> Tensor:
        return F.cross_entropy(batch.student @ batch.text.T / self.tau, batch.labels)


@register_loss("mse")
class MseLoss(LossTerm):
    """L_mse = mean_i ||student_i - teacher_img_i||^2."""

    def forward(self, batch: DistillBatch) -> Tensor:
        return (batch.student - batch.teacher_img).pow(2).sum(dim=1).mean()


@register_loss("im_cst")
class ImageContrastiveLoss(LossTerm):
    """L_im-cst = CE over j of -||student_i - teacher_img_j||^2 / tau with target i (optionally both ways)."""

    def __init__(self, tau: float = CLIP_TAU, bidirectional: bool = False) -> None:
        super().__init__()
        _check_positive("tau", tau)
        self.tau = tau
        self.bidirectional = bidirectional

    def forward(self, batch: DistillBatch) -> Tensor:
        s, t = batch.student, batch.teacher_img
        sq_dist = s.pow(2).sum(dim=1)[:, None] + t.pow(2).sum(dim=1)[None, :] - 2 * s @ t.T
        logits = -sq_dist / self.tau
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = F.cross_entropy(logits, target)
        if self.bidirectional:
            loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
        return loss


@register_loss("vlprox")
class VLProxLoss(LossTerm):
    """L_vlprox = sum_i I_i KL(P_T,topk(.|x_i) || P_S,topk(.|x_i)) / B, I_i = [argmax teacher == label_i]."""

    def __init__(self, k: int = 256, tau: float = CLIP_TAU, filter_misaligned: bool = True) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        _check_positive("tau", tau)
        self.k = k
        self.tau = tau
        self.filter_misaligned = filter_misaligned

    def forward(self, batch: DistillBatch) -> Tensor:
        teacher_logits = batch.teacher_img @ batch.text.T / self.tau
        student_logits = batch.student @ batch.text.T / self.tau
        k = min(self.k, teacher_logits.shape[1])
        top_teacher, top_idx = teacher_logits.topk(k, dim=1)
        log_p_t = F.log_softmax(top_teacher, dim=1)
        log_p_s = F.log_softmax(student_logits.gather(1, top_idx), dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        if self.filter_misaligned:
            kl = kl * (teacher_logits.argmax(dim=1) == batch.labels).to(kl.dtype)
        return kl.sum() / kl.shape[0]


@register_loss("cap")
class CaptionContrastiveLoss(LossTerm):
    """L_cap = CE over j of student_i @ caption_j / tau, target i, same-class captions j != i masked out."""

    def __init__(self, tau: float = CLIP_TAU) -> None:
        super().__init__()
        _check_positive("tau", tau)
        self.tau = tau

    def forward(self, batch: DistillBatch) -> Tensor:
        if batch.captions is None:
            raise ValueError("the 'cap' loss needs batch.captions (one caption feature per image), got None")
        logits = batch.student @ batch.captions.T / self.tau
        same_class = batch.labels[:, None] == batch.labels[None, :]
        own = torch.eye(len(batch.labels), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same_class & ~own, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(batch.labels), device=logits.device))


@register_loss("ifalign")
class IFAlignLoss(LossTerm):
    """ComKD IFAlign = mean_d |mean_b S - mean_b T| + mean_d |var_b S - var_b T| (population variance)."""

    def forward(self, batch: DistillBatch) -> Tensor:
        s, t = batch.student, batch.teacher_img
        mean_gap = (s.mean(dim=0) - t.mean(dim=0)).abs().mean()
        var_gap = (s.var(dim=0, unbiased=False) - t.var(dim=0, unbiased=False)).abs().mean()
        return mean_gap + var_gap


@register_loss("kl_refine")
class KLRefineLoss(LossTerm):
    """ComKD refinement = T^2 * mean_i KL(softmax(z_T,i / T) || softmax(z_S,i / T)), z = feats @ text.T / tau.

    ``temperature`` is T (default 1.0) and ``tau`` the CLIP logit scale (0.07); KL is summed over labels and
    averaged over the batch.
    """

    def __init__(self, temperature: float = 1.0, tau: float = CLIP_TAU) -> None:
        super().__init__()
        _check_positive("temperature", temperature)
        _check_positive("tau", tau)
        self.temperature = temperature
        self.tau = tau

    def forward(self, batch: DistillBatch) -> Tensor:
        scale = self.tau * self.temperature
        log_p_t = F.log_softmax(batch.teacher_img @ batch.text.T / scale, dim=1)
        log_p_s = F.log_softmax(batch.student @ batch.text.T / scale, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
        return self.temperature**2 * kl


@dataclass
class LossSpec:
    """One configured term: registry key, weight in the sum, keyword params for its constructor."""

    type: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


def _build_term(spec: LossSpec) -> LossTerm:
    if spec.type not in LOSSES:
        raise ValueError(f"unknown loss type {spec.type!r}; valid types: {sorted(LOSSES)}")
    cls = LOSSES[spec.type]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(spec.params) - set(valid))
    if unknown:
        raise ValueError(f"loss {spec.type!r} got unknown params {unknown}; valid params: {valid}")
    return cls(**spec.params)


class WeightedLoss(nn.Module):
    """Weighted sum of loss terms; ``forward`` returns (total, unweighted value of each term by type)."""

    def __init__(self, specs: list[LossSpec]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("at least one loss term is needed; valid types: " + str(sorted(LOSSES)))
        types = [spec.type for spec in specs]
        duplicates = sorted({t for t in types if types.count(t) > 1})
        if duplicates:
            raise ValueError(f"each loss type may appear once, got duplicates {duplicates} in {types}")
        for spec in specs:
            if not spec.weight >= 0:
                raise ValueError(f"loss {spec.type!r} weight must be >= 0, got {spec.weight!r}")
        self.weights = {spec.type: float(spec.weight) for spec in specs}
        self.terms = nn.ModuleDict({spec.type: _build_term(spec) for spec in specs})

    @property
    def needs_captions(self) -> bool:
        """True when a term ('cap') reads ``batch.captions``."""
        return "cap" in self.terms

    def forward(self, batch: DistillBatch) -> tuple[Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value as a python float."""
        values = {name: term(batch) for name, term in self.terms.items()}
        total = torch.stack([self.weights[name] * value for name, value in values.items()]).sum()
        return total, {name: value.detach().item() for name, value in values.items()}


def build_loss(specs: list[dict[str, Any] | LossSpec]) -> WeightedLoss:
    """Build a :class:`WeightedLoss` from config dicts ``{type, weight, params}`` or :class:`LossSpec` s."""
    allowed = [f.name for f in fields(LossSpec)]
    parsed = []
    for spec in specs:
        if isinstance(spec, dict):
            extra = sorted(set(spec) - set(allowed))
            if extra or "type" not in spec:
                raise ValueError(f"loss spec {spec!r} must have 'type' and only keys from {allowed}")
            spec = LossSpec(**spec)
        parsed.append(spec)
    return WeightedLoss(parsed)
