"""Few-shot grasp finetuning (Table 11's k-shot columns, `vlkd finetune-grasp`): finetune the student on new shots
with balanced replay batches, and the thresholds of the objects it learnt. Serving learns new objects as query
vectors instead (`vlkd_runtime.query_fit`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from training.fewshot import FewShotConfig, balanced_batches
from training.grasp.data import augment_observations
from training.grasp.losses import GraspBatch, build_grasp_loss, needs_teacher_features
from training.grasp.model import GraspScorer, score_inputs
from training.students import Student


@dataclass
class GraspFewShotConfig(FewShotConfig):
    """FewShotConfig with a multi-label loss; `params` picks what is trained ('all' = the whole student as in
    the paper, 'head' = only the projection on frozen backbone features: much cheaper on a CPU); `augment`
    flips and crops every drawn observation (shots and replay alike; 'all' only) so 5 shots generalise beyond
    themselves; after a finetune every added object gets its own threshold, the score it exceeds on `object_fpr` of
    held-out training-scene observations (which never hold it); object_fpr=1 keeps the model's calibrated
    threshold. `max_drop`, `holdout`, `min_heldout_auc` and `min_control_gap` are the guards of the offline
    `vlkd finetune-grasp` (`training.grasp.finetune_model`), which writes a new model dir only when they pass."""

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
