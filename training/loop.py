"""The training loop pieces `vlkd distill` and `vlkd train-grasp` share: optimiser config and construction, the
seeded per-epoch sample order (exact on resume), the optimiser step, epoch loss sums and the epoch log."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Sampler


@dataclass
class OptimConfig:
    """Optimiser and schedule."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: Literal["onecycle", "step", "none"] = "onecycle"
    step_size: int = 10
    gamma: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    amp: bool = True

    def validate(self) -> None:
        """Check ranges."""
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"optim needs lr > 0, epochs >= 1, batch_size >= 2; got lr={self.lr}, "
                             f"epochs={self.epochs}, batch_size={self.batch_size}")


class EpochPermutation(Sampler[int]):
    """A permutation of `indices` drawn from seed + epoch: the same order when an epoch is replayed."""

    def __init__(self, indices: list[int], seed: int, rank: int = 0, world: int = 1):
        self.indices, self.seed, self.rank, self.world, self.epoch = indices, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = [self.indices[i] for i in torch.randperm(len(self.indices), generator=g).tolist()]
        usable = len(order) - len(order) % self.world
        return iter(order[self.rank:usable:self.world])

    def __len__(self) -> int:
        return len(self.indices) // self.world


def build_optimizer(params: Any, config: OptimConfig, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """Optimizer and LR scheduler from config (one-cycle steps per batch, step schedule per epoch)."""
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                    steps_per_epoch=max(steps_per_epoch, 1))
    elif config.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
    else:
        sched = None
    return opt, sched


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any, schedule: str) -> None:
    """Backward and optimizer step, plus the scheduler step when the schedule is per batch (one-cycle)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None and schedule == "onecycle":
        scheduler.step()


def accumulate_terms(sums: dict[str, float], loss: torch.Tensor, terms: dict[str, float], n: int) -> None:
    """Add a batch's total and per-term losses, weighted by its size, to the epoch sums."""
    for k, v in {"total": loss.item(), **terms}.items():
        sums[k] = sums.get(k, 0.0) + v * n


def log_epoch(out: Path, record: dict[str, Any], writer: Any) -> None:
    """Append an epoch record to out/metrics.jsonl and, when a writer is given, to TensorBoard."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for k, v in record.items():
            if k not in ("epoch", "step"):
                writer.add_scalar(k, v, record["step"])


def tensorboard_writer(out: Path) -> Any:
    """A TensorBoard SummaryWriter under out/tensorboard, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
