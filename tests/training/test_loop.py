"""The training-loop pieces distillation and grasp training share (training.loop)."""
import json

import pytest
import torch

from training.loop import (EpochPermutation, OptimConfig, accumulate_terms, build_optimizer, log_epoch,
                           optimizer_step, tensorboard_writer)


def test_epoch_permutation_is_seeded_per_epoch_and_replays():
    indices = [3, 5, 7, 11, 13, 17, 19]
    sampler = EpochPermutation(indices, seed=4)
    first = list(sampler)
    assert sorted(first) == indices and len(sampler) == 7
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == indices and second != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed run replays the same order
    assert list(EpochPermutation(indices, seed=4)) == first and list(EpochPermutation(indices, seed=5)) != first


def test_epoch_permutation_shards_across_ranks():
    indices = list(range(10))
    shards = [list(EpochPermutation(indices, seed=0, rank=r, world=3)) for r in range(3)]
    assert all(len(s) == 3 == len(EpochPermutation(indices, 0, r, 3)) for r, s in enumerate(shards))
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 9  # disjoint; the one left over (10 % 3) is dropped this epoch
    order = list(EpochPermutation(indices, seed=0))
    assert shards[1] == order[1:9:3]


def test_optim_config_validation():
    OptimConfig().validate()
    for bad in (dict(lr=0), dict(epochs=0), dict(batch_size=1)):
        with pytest.raises(ValueError, match="optim needs"):
            OptimConfig(**bad).validate()


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "onecycle"), ("adamw", "step"), ("adamw", "none")])
def test_build_optimizer_and_step(optimizer, schedule):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    config = OptimConfig(optimizer=optimizer, schedule=schedule, lr=0.1, epochs=2, step_size=1)
    opt, sched = build_optimizer(model.parameters(), config, steps_per_epoch=3)
    assert isinstance(opt, torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)
    assert (sched is None) == (schedule == "none")
    before = model.weight.detach().clone()
    lr = opt.param_groups[0]["lr"]
    optimizer_step(model(torch.randn(8, 4)).pow(2).mean(), opt, sched, schedule)
    assert not torch.equal(before, model.weight)
    assert model.weight.grad is not None
    # one-cycle steps per batch; the step schedule is stepped per epoch by the caller
    assert (opt.param_groups[0]["lr"] != lr) == (schedule == "onecycle")


def test_onecycle_with_no_batches_still_builds():
    opt, sched = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(), steps_per_epoch=0)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)


def test_accumulate_terms_weights_by_batch_size():
    sums: dict[str, float] = {}
    accumulate_terms(sums, torch.tensor(2.0), {"mse": 1.0}, 4)
    accumulate_terms(sums, torch.tensor(1.0), {"mse": 0.5, "cls": 3.0}, 2)
    assert sums == {"total": 10.0, "mse": 5.0, "cls": 6.0}


def test_log_epoch_appends_jsonl_and_writes_scalars(tmp_path):
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, key, value, step):
            self.scalars.append((key, value, step))

    writer = Writer()
    log_epoch(tmp_path, {"epoch": 1, "step": 5, "loss/total": 0.5}, writer)
    log_epoch(tmp_path, {"epoch": 2, "step": 10, "loss/total": 0.25}, None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss/total"] == 0.25
    assert writer.scalars == [("loss/total", 0.5, 5)]


def test_tensorboard_writer_is_optional(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert tensorboard_writer(tmp_path) is None
