"""Loss terms against plain-loop hand computations, their gradient directions, and the weighted wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import LOSSES, DistillBatch, LossSpec, WeightedLoss, build_loss

TAU = 0.07


def unit_rows(rng: np.random.Generator, n: int, d: int = 4) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_batch(seed: int = 0, b: int = 4, c: int = 5, labels: list[int] | None = None) -> DistillBatch:
    """A float64 batch whose teacher lies near its labels' texts (so most teacher argmaxes are right)."""
    rng = np.random.default_rng(seed)
    text = unit_rows(rng, c)
    labels_np = np.array(labels if labels is not None else [i % c for i in range(b)])
    teacher = text[labels_np] + 0.3 * rng.normal(size=(b, 4))
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    captions = teacher + 0.5 * rng.normal(size=(b, 4))
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    return DistillBatch(
        student=torch.from_numpy(unit_rows(rng, b)),
        teacher_img=torch.from_numpy(teacher),
        text=torch.from_numpy(text),
        labels=torch.from_numpy(labels_np).long(),
        captions=torch.from_numpy(captions),
    )


def np_of(batch: DistillBatch) -> tuple[np.ndarray, ...]:
    tensors = (batch.student, batch.teacher_img, batch.text, batch.captions)
    return tuple(None if x is None else x.detach().numpy() for x in tensors) + (batch.labels.numpy(),)


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def sqdist(a: np.ndarray, b: np.ndarray) -> float:
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    lse = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - lse for v in values]


def kl(log_p: list[float], log_q: list[float]) -> float:
    return sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))


def hand_cls(batch: DistillBatch, tau: float = TAU) -> float:
    s, _, text, _, y = np_of(batch)
    return sum(-log_softmax([dot(s[i], tc) / tau for tc in text])[y[i]] for i in range(len(s))) / len(s)


def hand_mse(batch: DistillBatch) -> float:
    s, t, *_ = np_of(batch)
    return sum(sqdist(s[i], t[i]) for i in range(len(s))) / len(s)


def hand_im_cst(batch: DistillBatch, tau: float = TAU, bidirectional: bool = False) -> float:
    s, t, *_ = np_of(batch)
    b = len(s)
    forward = sum(-log_softmax([-sqdist(s[i], t[j]) / tau for j in range(b)])[i] for i in range(b)) / b
    if not bidirectional:
        return forward
    backward = sum(-log_softmax([-sqdist(s[i], t[j]) / tau for i in range(b)])[j] for j in range(b)) / b
    return (forward + backward) / 2


def hand_vlprox(batch: DistillBatch, k: int = 256, tau: float = TAU, filter_misaligned: bool = True) -> float:
    s, t, text, _, y = np_of(batch)
    total = 0.0
    for i in range(len(s)):
        teacher_logits = [dot(t[i], tc) / tau for tc in text]
        ranked = sorted(range(len(text)), key=lambda c: -teacher_logits[c])[: min(k, len(text))]
        if filter_misaligned and ranked[0] != y[i]:
            continue
        log_p_t = log_softmax([teacher_logits[c] for c in ranked])
        log_p_s = log_softmax([dot(s[i], text[c]) / tau for c in ranked])
        total += kl(log_p_t, log_p_s)
    return total / len(s)


def hand_cap(batch: DistillBatch, tau: float = TAU) -> float:
    s, _, _, cap, y = np_of(batch)
    b = len(s)
    total = 0.0
    for i in range(b):
        kept = [j for j in range(b) if j == i or y[j] != y[i]]
        logits = [dot(s[i], cap[j]) / tau for j in kept]
        total -= log_softmax(logits)[kept.index(i)]
    return total / b


def hand_ifalign(batch: DistillBatch) -> float:
    s, t, *_ = np_of(batch)
    b, d = s.shape
    gap = 0.0
    for k in range(d):
        ms, mt = sum(s[:, k]) / b, sum(t[:, k]) / b
        vs = sum((x - ms) ** 2 for x in s[:, k]) / b
        vt = sum((x - mt) ** 2 for x in t[:, k]) / b
        gap += abs(ms - mt) + abs(vs - vt)
    return gap / d


def hand_kl_refine(batch: DistillBatch, temperature: float = 1.0, tau: float = TAU) -> float:
    s, t, text, _, _ = np_of(batch)
    total = 0.0
    for i in range(len(s)):
        log_p_t = log_softmax([dot(t[i], tc) / tau / temperature for tc in text])
        log_p_s = log_softmax([dot(s[i], tc) / tau / temperature for tc in text])
        total += kl(log_p_t, log_p_s)
    return temperature**2 * total / len(s)


HAND = {
    "cls": hand_cls,
    "mse": hand_mse,
    "im_cst": hand_im_cst,
    "vlprox": hand_vlprox,
    "cap": hand_cap,
    "ifalign": hand_ifalign,
    "kl_refine": hand_kl_refine,
}


def value(name: str, batch: DistillBatch, **params: object) -> float:
    return LOSSES[name](**params)(batch).item()


def test_every_registered_term_has_a_hand_computation() -> None:
    # Terms other modules register (the grasp losses in training/grasp_losses.py) are tested beside them.
    assert {name for name, cls in LOSSES.items() if cls.__module__ == "training.losses"} == set(HAND)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("cls", {}),
        ("cls", {"tau": 0.5}),
        ("mse", {}),
        ("im_cst", {}),
        ("im_cst", {"bidirectional": True, "tau": 0.3}),
        ("vlprox", {}),
        ("vlprox", {"k": 2}),
        ("vlprox", {"k": 3, "filter_misaligned": False}),
        ("cap", {}),
        ("ifalign", {}),
        ("kl_refine", {}),
        ("kl_refine", {"temperature": 4.0}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_term_matches_hand_computation(name: str, params: dict, seed: int) -> None:
    batch = make_batch(seed, b=4, c=5, labels=[0, 2, 2, 4])
    assert value(name, batch, **params) == pytest.approx(HAND[name](batch, **params), rel=1e-9, abs=1e-12)


def sgd_step(
    name: str, batch: DistillBatch, lr: float, **params: object
) -> tuple[float, float, DistillBatch]:
    """Loss before and after one SGD step on the student (renormalised), and the stepped batch."""
    term = LOSSES[name](**params)
    student = batch.student.clone().requires_grad_(True)
    stepped = DistillBatch(student, batch.teacher_img, batch.text, batch.labels, batch.captions)
    before = term(stepped)
    before.backward()
    with torch.no_grad():
        moved = F.normalize(student - lr * student.grad, dim=1)
    after_batch = DistillBatch(moved, batch.teacher_img, batch.text, batch.labels, batch.captions)
    return before.item(), term(after_batch).item(), after_batch


@pytest.mark.parametrize("name", sorted(HAND))
def test_one_sgd_step_lowers_every_term(name: str) -> None:
    batch = make_batch(3, b=4, c=5, labels=[0, 1, 1, 3])
    params = {"filter_misaligned": False} if name == "vlprox" else {}
    before, after, _ = sgd_step(name, batch, lr=1e-3, **params)
    assert before > 0
    assert after < before


def own_log_prob(student: torch.Tensor, targets: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Per-sample log-softmax probability of row ``own[i]`` of ``targets`` under student @ targets.T / TAU."""
    return F.log_softmax(student @ targets.T / TAU, dim=1).gather(1, own[:, None]).squeeze(1)


def test_cls_step_raises_every_samples_probability_of_its_label() -> None:
    batch = make_batch(4)
    _, _, after = sgd_step("cls", batch, lr=1e-3)
    before = own_log_prob(batch.student, batch.text, batch.labels)
    assert torch.all(own_log_prob(after.student, batch.text, batch.labels) > before)


def test_mse_gradient_points_from_teacher_to_student() -> None:
    batch = make_batch(5)
    student = batch.student.clone().requires_grad_(True)
    LOSSES["mse"]()(DistillBatch(student, batch.teacher_img, batch.text, batch.labels)).backward()
    expected = 2 * (batch.student - batch.teacher_img) / len(student)
    assert torch.allclose(student.grad, expected)


@pytest.mark.parametrize("name", ["mse", "im_cst"])
def test_step_moves_each_student_toward_its_own_teacher(name: str) -> None:
    batch = make_batch(6)
    _, _, after = sgd_step(name, batch, lr=1e-3)
    dist_before = (batch.student - batch.teacher_img).norm(dim=1)
    dist_after = (after.student - batch.teacher_img).norm(dim=1)
    assert torch.all(dist_after < dist_before)


def test_cap_step_raises_every_samples_probability_of_its_own_caption() -> None:
    batch = make_batch(7, labels=[0, 1, 2, 3])
    _, _, after = sgd_step("cap", batch, lr=1e-3)
    own = torch.arange(4)
    before = own_log_prob(batch.student, batch.captions, own)
    assert torch.all(own_log_prob(after.student, batch.captions, own) > before)


def test_kl_refine_and_ifalign_are_zero_when_student_equals_teacher() -> None:
    batch = make_batch(8)
    same = DistillBatch(batch.teacher_img.clone(), batch.teacher_img, batch.text, batch.labels)
    assert value("kl_refine", same, temperature=2.0) == pytest.approx(0.0, abs=1e-12)
    assert value("ifalign", same) == 0.0


def test_im_cst_bidirectional_averages_both_directions() -> None:
    batch = make_batch(9)
    one_way = value("im_cst", batch)
    both = value("im_cst", batch, bidirectional=True)
    assert both != pytest.approx(one_way)
    assert both == pytest.approx(hand_im_cst(batch, bidirectional=True), rel=1e-9)


def misaligned_batch() -> DistillBatch:
    """Sample 0's teacher is nearest to label 1's text but is labelled 0."""
    batch = make_batch(10, b=3, c=4, labels=[1, 2, 3])
    labels = torch.tensor([0, 2, 3])
    assert (batch.teacher_img @ batch.text.T).argmax(1).tolist() == [1, 2, 3]
    return DistillBatch(batch.student, batch.teacher_img, batch.text, labels)


def test_vlprox_filter_drops_misaligned_sample() -> None:
    batch = misaligned_batch()
    student = batch.student.clone().requires_grad_(True)
    loss = LOSSES["vlprox"]()(DistillBatch(student, batch.teacher_img, batch.text, batch.labels))
    loss.backward()
    assert torch.all(student.grad[0] == 0)
    assert torch.any(student.grad[1:] != 0)
    assert loss.item() == pytest.approx(hand_vlprox(batch), rel=1e-9)
    unfiltered = value("vlprox", batch, filter_misaligned=False)
    assert unfiltered > loss.item()
    assert unfiltered == pytest.approx(hand_vlprox(batch, filter_misaligned=False), rel=1e-9)


def test_vlprox_clamps_k_to_number_of_labels() -> None:
    batch = make_batch(11, c=4)
    assert value("vlprox", batch, k=256) == value("vlprox", batch, k=4)
    assert value("vlprox", batch, k=256) != pytest.approx(value("vlprox", batch, k=2))
    assert value("vlprox", batch, k=1) == pytest.approx(0.0, abs=1e-12)


def test_cap_masks_other_same_class_captions() -> None:
    all_same = make_batch(12, labels=[2, 2, 2, 2])
    assert value("cap", all_same) == pytest.approx(0.0, abs=1e-12)
    distinct = make_batch(12, labels=[0, 1, 2, 3])
    logits = distinct.student @ distinct.captions.T / TAU
    assert value("cap", distinct) == pytest.approx(F.cross_entropy(logits, torch.arange(4)).item(), rel=1e-9)
    pair = make_batch(12, labels=[0, 0, 1, 2])
    assert value("cap", pair) < value("cap", distinct)
    assert value("cap", pair) == pytest.approx(hand_cap(pair), rel=1e-9)


def test_cap_without_captions_raises() -> None:
    batch = make_batch(13)
    no_caps = DistillBatch(batch.student, batch.teacher_img, batch.text, batch.labels)
    with pytest.raises(ValueError, match="captions"):
        LOSSES["cap"]()(no_caps)


def test_batch_shape_mismatch_names_shapes() -> None:
    batch = make_batch(14)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 4\)"):
        DistillBatch(batch.student, batch.teacher_img[:3], batch.text, batch.labels)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        DistillBatch(batch.student, batch.teacher_img, batch.text[:, :3], batch.labels)


def test_weighted_loss_sums_weighted_terms_and_reports_unweighted_values() -> None:
    batch = make_batch(15)
    loss = WeightedLoss([LossSpec("cls", weight=2.0), LossSpec("mse", weight=0.5)])
    total, parts = loss(batch)
    assert parts == pytest.approx({"cls": hand_cls(batch), "mse": hand_mse(batch)}, rel=1e-9)
    assert all(isinstance(v, float) for v in parts.values())
    assert total.item() == pytest.approx(2.0 * hand_cls(batch) + 0.5 * hand_mse(batch), rel=1e-9)
    assert not loss.needs_captions


def test_build_loss_from_config_dicts_passes_params() -> None:
    batch = make_batch(16)
    loss = build_loss([{"type": "vlprox", "params": {"k": 2}}, {"type": "cap", "weight": 0.1}])
    assert loss.needs_captions
    _, parts = loss(batch)
    assert parts == pytest.approx({"vlprox": hand_vlprox(batch, k=2), "cap": hand_cap(batch)}, rel=1e-9)


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([{"type": "nope"}], "valid types.*'cls'"),
        ([{"type": "vlprox", "params": {"topk": 3}}], r"unknown params \['topk'\].*'k'"),
        ([{"type": "vlprox", "params": {"k": 0}}], "k must be >= 1"),
        ([{"type": "cls", "params": {"tau": 0.0}}], "tau must be > 0"),
        ([{"type": "mse", "weight": -1.0}], "weight must be >= 0"),
        ([{"type": "mse"}, {"type": "mse"}], "duplicates"),
        ([{"type": "mse", "scale": 2}], "only keys"),
        ([], "at least one"),
    ],
)
def test_bad_config_raises_value_error(specs: list[dict], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(specs)
