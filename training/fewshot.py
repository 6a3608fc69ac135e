"""Few-shot finetuning with balanced batches: new shots fill at most half of each batch, replay the rest."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.losses import DistillBatch, build_loss


@dataclass
class FewShotConfig:
    """Short finetune schedule on k shots per new label."""

    steps: int = 60
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 5e-4
    new_fraction: float = 0.5
    losses: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "cls", "weight": 1.0}])

    def validate(self) -> None:
        """Check ranges."""
        if not 0 < self.new_fraction <= 0.5:
            raise ValueError(f"fewshot.new_fraction must be in (0, 0.5], got {self.new_fraction}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"fewshot needs steps >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")
        build_loss(self.losses)


@dataclass
class ShotSet:
    """Preprocessed images (N, C, H, W), targets into the text rows, and teacher features (N, D) when known."""

    images: torch.Tensor
    targets: torch.Tensor
    teacher: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.targets)


def balanced_batches(n_new: int, n_replay: int, batch_size: int, new_fraction: float, steps: int,
                     generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Index pairs (new, replay) per step: min(n_new, new_fraction*B) new shots, the rest replay."""
    if n_new == 0:
        raise ValueError("few-shot finetuning needs at least one new shot")
    n_take = max(1, min(n_new, int(batch_size * new_fraction)))
    n_rep = batch_size - n_take if n_replay else 0
    out = []
    for _ in range(steps):
        new = torch.randperm(n_new, generator=generator)[:n_take]
        rep = torch.randint(0, n_replay, (n_rep,), generator=generator) if n_rep else torch.empty(0, dtype=torch.long)
        out.append((new, rep))
    return out


def finetune_few_shot(student: nn.Module, shots: ShotSet, replay: ShotSet, text: torch.Tensor,
                      config: FewShotConfig, seed: int = 0, device: str | torch.device = "cpu",
                      progress: bool = True) -> nn.Module:
    """Finetune a copy of `student` on `shots` (+ replayed old data) against label texts `text` (C_all, D)."""
    config.validate()
    model = copy.deepcopy(student).to(device).train()
    criterion = build_loss(config.losses).to(device)
    needs_teacher = any(s["type"] != "cls" for s in config.losses)
    if needs_teacher and (shots.teacher is None or (len(replay) and replay.teacher is None)):
        raise ValueError("few-shot losses other than 'cls' need teacher features for shots and replay")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(seed)
    text = text.to(device)
    plan = balanced_batches(len(shots), len(replay), config.batch_size, config.new_fraction, config.steps, g)
    for new, rep in tqdm(plan, desc="few-shot finetune", unit="step", disable=not progress):
        images = torch.cat([shots.images[new], replay.images[rep]]).to(device)
        targets = torch.cat([shots.targets[new], replay.targets[rep]]).to(device)
        feats = model(images)
        teacher = (torch.cat([shots.teacher[new], replay.teacher[rep]]).to(device)
                   if shots.teacher is not None and (replay.teacher is not None or not len(rep)) else feats.detach())
        loss, _ = criterion(DistillBatch(student=feats, teacher_img=teacher, text=text, labels=targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()
