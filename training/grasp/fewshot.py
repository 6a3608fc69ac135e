"""Few-shot grasp learning: finetune the student on new shots with balanced replay batches, and the checks a
finetuned student must pass before it may replace the serving one."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from training.fewshot import FewShotConfig, balanced_batches
from training.grasp.data import augment_observations
from training.grasp.losses import GraspBatch, build_grasp_loss, needs_teacher_features
from training.grasp.model import GraspScorer, accuracy_score, binary_counts, roc_auc, score_inputs
from training.students import Student


@dataclass
class GraspFewShotConfig(FewShotConfig):
    """FewShotConfig with a multi-label loss; `params` picks what is trained ('all' = the whole student as in
    the paper, 'head' = only the projection on frozen backbone features: much cheaper on a CPU); `augment`
    flips and crops every drawn observation (shots and replay alike; 'all' only) so 5 shots generalise beyond
    themselves; a finetune is rejected when the known objects' ranking on held-out observations drops by more
    than `max_drop` (1: no guard); `holdout` of the new shots (at least one) are kept out of the finetune to judge
    it: they must score no lower than before, stand out from the held-out training scenes (which never hold an
    added object) with ROC AUC >= `min_heldout_auc`, and beat structureless copies of themselves by
    `min_control_gap` on average (`check_finetune`); each object keeps its newest `max_shots` shots; after a
    finetune every added object gets its own threshold, the score it exceeds on `object_fpr` of held-out
    training-scene observations (which never hold it); object_fpr=1 keeps the model's calibrated threshold."""

    losses: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "asl", "weight": 1.0}])
    params: Literal["all", "head"] = "all"
    augment: bool = True
    max_drop: float = 0.05
    max_shots: int = 20
    object_fpr: float = 0.2
    holdout: float = 0.2
    min_heldout_auc: float = 0.75
    min_control_gap: float = 0.03

    def validate(self) -> None:
        """Check ranges and the loss list."""
        if not 0 < self.new_fraction <= 0.5:
            raise ValueError(f"fewshot.new_fraction must be in (0, 0.5], got {self.new_fraction}")
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"fewshot needs steps >= 1, batch_size >= 2, lr > 0; got {self.steps}, "
                             f"{self.batch_size}, {self.lr}")
        if not 0 <= self.max_drop <= 1 or self.max_shots < 1 or not 0 < self.object_fpr <= 1:
            raise ValueError(f"fewshot needs 0 <= max_drop <= 1, max_shots >= 1, 0 < object_fpr <= 1; got "
                             f"{self.max_drop}, {self.max_shots}, {self.object_fpr}")
        if not 0 < self.holdout < 1 or not 0 <= self.min_heldout_auc <= 1 or not -1 <= self.min_control_gap <= 1:
            raise ValueError(f"fewshot needs 0 < holdout < 1, 0 <= min_heldout_auc <= 1, -1 <= min_control_gap <= 1; "
                             f"got {self.holdout}, {self.min_heldout_auc}, {self.min_control_gap}")
        build_grasp_loss(self.losses)


def split_holdout(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n shots: the last max(1, round(n * fraction)) are held out, at least one
    trains. Needs n >= 2."""
    if n < 2:
        raise ValueError(f"a few-shot job needs at least 2 distinct shots (one is held out to judge it), got {n}")
    held = min(n - 1, max(1, round(n * fraction)))
    return list(range(n - held)), list(range(n - held, n))


def guard_resolution(val_targets: Tensor) -> float:
    """The smallest drop in ROC AUC the known-objects guard can tell from noise on these held-out targets (N, M):
    twice AUC's standard error at its worst (AUC 0.5, Hanley & McNeil 1982: var <= (P + N + 1) / (12 P N) over P
    positive and N negative (observation, object) pairs). inf without both kinds of pair."""
    t = val_targets.flatten() > 0.5
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if not n_pos or not n_neg:
        return float("inf")
    return 2 * math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


def guard_problem(val_targets: Tensor, max_drop: float) -> str | None:
    """Why the known-objects guard cannot resolve `max_drop` on these held-out targets (N observations, M known
    objects), with how many observations like them it would need; None when it can (or max_drop >= 1: no guard).

    A drop of max_drop is resolved when it is at least `guard_resolution`. For max_drop = 0.05 that is about 267
    positive and 267 negative pairs when balanced, or 134 positive ones with very many negatives; at a positive
    share p of the pairs, ceil(1 / (3 p (1 - p) max_drop^2) / M) observations (p = 1/3, M = 4: 150)."""
    if max_drop >= 1:
        return None
    have = guard_resolution(val_targets)
    if have <= max_drop + 1e-12:
        return None
    n, m = val_targets.shape if val_targets.dim() == 2 else (len(val_targets), 1)
    t = val_targets.flatten() > 0.5
    p = float(t.float().mean()) if len(t) else 0.0
    if not 0 < p < 1:
        return (f"the model dir's replay buffer holds {n} held-out observations with "
                f"{'no' if p == 0 else 'only'} graspable known objects: the known-objects guard (fewshot.max_drop="
                f"{max_drop:g}) cannot measure ROC AUC there; retrain with a larger val_size, or set "
                "fewshot.max_drop=1 to learn without the guard")
    need = math.ceil(1 / (3 * p * (1 - p) * max_drop ** 2) / max(m, 1))
    return (f"the model dir's replay buffer holds {n} held-out observations ({int(t.sum())} graspable of {len(t)} "
            f"object pairs): the known-objects guard resolves ROC AUC drops of {have:.2f} there, too coarse for "
            f"fewshot.max_drop={max_drop:g}, which needs about {need} such observations; retrain with val_size >= "
            f"{need}, or set fewshot.max_drop >= {math.ceil(have * 100) / 100:.2f} to accept the coarser guard")


@dataclass
class GraspShots:
    """Transformed observations (N, C, S, S) with graspable targets (N, M), a mask (N, M) of the known pairs
    and, when available, teacher image features (N, D)."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    teacher: Tensor | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def cat(parts: list["GraspShots"]) -> "GraspShots":
        """Concatenate sets with the same columns; teacher features only if every part has them."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        teacher = torch.cat([p.teacher for p in parts]) if all(p.teacher is not None for p in parts) else None
        return GraspShots(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]),
                          torch.cat([p.mask for p in parts]), teacher)


def finetune_grasp(student: Student, scorer: GraspScorer, shots: GraspShots, replay: GraspShots, pos: Tensor,
                   neg: Tensor | None, config: GraspFewShotConfig, seed: int = 0, device: str | torch.device = "cpu",
                   progress: Callable[[float], None] | None = None) -> Student:
    """Finetune a copy of `student` (the scorer stays fixed): each step draws at most `new_fraction` of the
    batch from `shots`, the rest from `replay`. Returns the finetuned copy in eval mode."""
    config.validate()
    criterion = build_grasp_loss(config.losses).to(device)
    if needs_teacher_features(criterion) and (shots.teacher is None or (len(replay) and replay.teacher is None)):
        raise ValueError(f"few-shot losses {list(criterion.terms)} need teacher features for shots and replay; "
                         "use fewshot.losses=[{type: asl}]")
    model = copy.deepcopy(student).to(device)
    scorer = copy.deepcopy(scorer).to(device).requires_grad_(False)
    pos, neg = pos.to(device), None if neg is None else neg.to(device)
    if config.params == "head":
        if model.edu is not None or model.local_proj is not None:
            raise ValueError("fewshot.params=head does not support students with EduAttention or dense features; "
                             "use params=all")
        model.eval().requires_grad_(False)
        model.proj.requires_grad_(True)
        encode_new, encode_rep = _pooled(model, shots.inputs, device), _pooled(model, replay.inputs, device)
        params = list(model.proj.parameters())
    else:
        model.train().requires_grad_(True)
        encode_new, encode_rep = shots.inputs, replay.inputs
        params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    plan = balanced_batches(len(shots), len(replay), config.batch_size, config.new_fraction, config.steps, generator)
    for step, (new, rep) in enumerate(plan):
        x = torch.cat([encode_new[new], encode_rep[rep]])
        if config.augment and config.params == "all":
            x = augment_observations(x, generator)
        x = x.to(device)
        feats = F.normalize(model.proj(x), dim=-1) if config.params == "head" else model(x)
        targets = torch.cat([shots.targets[new], replay.targets[rep]]).to(device)
        mask = torch.cat([shots.mask[new], replay.mask[rep]]).to(device)
        teacher = _teacher_rows(shots, new, replay, rep)
        glob = feats[:, 0] if feats.ndim == 3 else feats  # a dense student's global embedding
        batch = GraspBatch(student=glob, teacher_img=glob.detach() if teacher is None else teacher.to(device),
                           text=pos, labels=torch.zeros(len(x), dtype=torch.long, device=device),
                           logits=scorer(feats, pos, neg), targets=targets, mask=mask)
        loss, _ = criterion(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress((step + 1) / len(plan))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _pooled(model: Student, inputs: Tensor, device: str | torch.device, batch_size: int = 64) -> Tensor:
    """Backbone features before the projection (the frozen part in 'head' mode), on the CPU."""
    out = [model.backbone.forward_head(model.backbone.forward_features(inputs[i:i + batch_size].to(device)),
                                       pre_logits=True).cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.proj.in_features)


def _teacher_rows(shots: GraspShots, new: Tensor, replay: GraspShots, rep: Tensor) -> Tensor | None:
    """Teacher features of a batch, or None when some drawn row has none."""
    if shots.teacher is None or (len(rep) and replay.teacher is None):
        return None
    return torch.cat([shots.teacher[new]] + ([replay.teacher[rep]] if len(rep) else []))


@dataclass
class FinetuneCheck:
    """Outcome of the checks a finetuned student must pass before it is swapped in."""

    ok: bool
    reason: str
    report: dict[str, float]


def check_finetune(old: Student, new: Student, scorer: GraspScorer, threshold: float, val_inputs: Tensor,
                   val_targets: Tensor, val_pos: Tensor, val_neg: Tensor | None, held_inputs: Tensor, shot_pos: Tensor,
                   shot_neg: Tensor | None, config: GraspFewShotConfig, device: str | torch.device = "cpu",
                   absent_inputs: Tensor | None = None) -> FinetuneCheck:
    """What guards the known and checks the learnt, before a finetuned student may replace the serving one:

    - new scores must be finite;
    - the known objects' ranking quality (ROC AUC) on the held-out observations `val_inputs` may drop by at most
      `config.max_drop` (a forgetting guard a calibration shift alone does not trip; `guard_problem` says whether
      the observations resolve that margin, and the caller refuses a job before it starts when they do not);
    - the new object is judged on `held_inputs`, shots of it the finetune did not train on (`split_holdout`):
      their mean score must not fall; they must outrank `absent_inputs`, held-out observations without the object
      (default `val_inputs`: training scenes never hold an added object), with ROC AUC >= `config.min_heldout_auc`;
      and they must score `config.min_control_gap` above structureless copies of themselves on average (per shot
      the higher of a flat frame of its mean colour and Gaussian noise of its per-channel mean and spread): a
      finetune on junk (a grey wall, noise) scores its held-out junk shot near 1 as well, but these copies are
      junk of the same kind and score as high, while a model that learnt an object's shape scores them lower.
    Accuracy at the threshold is reported, not gated."""
    report: dict[str, float] = {"heldout_shots": float(len(held_inputs))}
    new_held = score_inputs(new, scorer, held_inputs, shot_pos, shot_neg, device=device)[:, 0]
    old_held = score_inputs(old, scorer, held_inputs, shot_pos, shot_neg, device=device)[:, 0]
    control = torch.maximum(*[score_inputs(new, scorer, c, shot_pos, shot_neg, device=device)[:, 0]
                              for c in structureless_copies(held_inputs)])
    report.update(old_heldout_score=float(old_held.mean()), new_heldout_score=float(new_held.mean()),
                  control_score=float(control.mean()), control_gap=float((new_held - control).mean()))
    if not (torch.isfinite(new_held).all() and torch.isfinite(control).all()):
        return FinetuneCheck(False, "the finetuned model produces non-finite scores", report)
    absent = None
    if len(val_inputs):
        for tag, model in (("old", old), ("new", new)):
            scores = score_inputs(model, scorer, val_inputs, val_pos, val_neg, device=device)
            if not torch.isfinite(scores).all():
                return FinetuneCheck(False, "the finetuned model produces non-finite scores", report)
            report[f"{tag}_val_auc"] = roc_auc(scores, val_targets)
            report[f"{tag}_val_accuracy"] = accuracy_score(binary_counts(scores >= threshold, val_targets > 0.5))
        report["guard_resolution"] = guard_resolution(val_targets)
        if report["new_val_auc"] < report["old_val_auc"] - config.max_drop - 1e-9:
            return FinetuneCheck(False, f"known objects' ROC AUC on held-out observations fell from "
                                        f"{report['old_val_auc']:.3f} to {report['new_val_auc']:.3f} (more than "
                                        f"fewshot.max_drop={config.max_drop})", report)
    absent_inputs = val_inputs if absent_inputs is None else absent_inputs
    if len(absent_inputs):
        absent = score_inputs(new, scorer, absent_inputs, shot_pos, shot_neg, device=device)[:, 0]
    n = len(held_inputs)
    if not report["new_heldout_score"] >= report["old_heldout_score"] - 1e-6:
        return FinetuneCheck(False, f"the new object's score on its {n} held-out shot(s), which it did not train on, "
                                    f"fell from {report['old_heldout_score']:.3f} to "
                                    f"{report['new_heldout_score']:.3f}: what it learnt does not carry over to another "
                                    "view of it (give more varied shots of the object alone)", report)
    if absent is not None:
        labels = torch.cat([torch.ones(n), torch.zeros(len(absent))])
        report["heldout_auc"] = roc_auc(torch.cat([new_held, absent]), labels)
        if report["heldout_auc"] < config.min_heldout_auc:
            return FinetuneCheck(False, f"the new object's {n} held-out shot(s) do not stand out from the held-out "
                                        f"training scenes, which never hold it (ROC AUC {report['heldout_auc']:.2f} < "
                                        f"fewshot.min_heldout_auc={config.min_heldout_auc:g}): do all shots show "
                                        "the same object?", report)
    if report["control_gap"] < config.min_control_gap:
        return FinetuneCheck(False, f"the finetuned model scores structureless copies of the held-out shots (a flat "
                                    f"frame of their mean colour, noise of their colours) about as high as the shots "
                                    f"(gap {report['control_gap']:.2f} < fewshot.min_control_gap="
                                    f"{config.min_control_gap:g}): it learnt a colour or a texture, not an object "
                                    "(shots of a flat or noisy frame?)", report)
    return FinetuneCheck(True, "ok", report)


def structureless_copies(inputs: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two copies of transformed observations (N, C, S, S) without their structure: each channel flat at its mean,
    and seeded Gaussian noise of each channel's mean and standard deviation."""
    mean = inputs.mean(dim=(2, 3), keepdim=True)
    std = inputs.std(dim=(2, 3), keepdim=True) if inputs.shape[2] * inputs.shape[3] > 1 else torch.zeros_like(mean)
    noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(seed))
    return mean.expand_as(inputs).contiguous(), mean + std * noise


def object_thresholds(student: Student, scorer: GraspScorer, absent_inputs: Tensor, pos: Tensor, neg: Tensor | None,
                      false_positive_rate: float, device: str | torch.device = "cpu") -> Tensor | None:
    """Decision thresholds (M,) of M added objects (prompt features `pos`/`neg` (M, D)), each saying "graspable"
    on `false_positive_rate` of held-out observations from the training scenes, where an added object never
    appears. Their shots cannot calibrate recall: the model was just fitted to them. None without observations."""
    if not len(absent_inputs):
        return None
    ranked = score_inputs(student, scorer, absent_inputs, pos, neg, device=device).double().sort(
        dim=0, descending=True).values  # (N, M), each column highest first
    allowed = min(int(false_positive_rate * len(ranked) + 1e-9), len(ranked) - 1)  # frames that may score >= t
    above = ranked[allowed - 1] if allowed else torch.ones(ranked.shape[1], dtype=torch.float64)
    return ((above + ranked[allowed]) / 2).float()  # midway between the last allowed and the first refused score


def added_object_thresholds(student: Student, scorer: GraspScorer, held_out_inputs: Tensor, pos: Tensor,
                            neg: Tensor | None, object_fpr: float, device: str | torch.device = "cpu"
                            ) -> list[float | None]:
    """The thresholds of M objects learnt from shots after a finetune, one per row of `pos` (M, D): what both
    `add_object` and Table 11's k-shot columns decide them at. Each is the score the object exceeds on `object_fpr`
    of the model's held-out training-scene observations (`object_thresholds`); None (the model's calibrated
    threshold) for all when object_fpr=1 or there are no such observations."""
    found = None if object_fpr >= 1 else object_thresholds(student, scorer, held_out_inputs, pos, neg, object_fpr,
                                                           device)
    return [None] * len(pos) if found is None else [float(t) for t in found]
