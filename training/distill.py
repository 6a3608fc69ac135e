"""`vlkd distill`: train a student on Y_id against cached teacher features, with exact resume and DDP."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlkd_formats.config import dump_config, to_dict
from training.data import DataConfig, DistillData, ImageDataset, image_transform, load_distill_data
from training.feature_cache import ImageFeatures, teacher_image_features, teacher_text_features
from training.losses import DistillBatch, build_loss
from training.loop import (EpochPermutation, OptimConfig, accumulate_terms, build_optimizer, log_epoch,
                           optimizer_step, tensorboard_writer)
from training.model_dir import ModelCard, write_model_dir
from vlkd_formats.model_dir import KIND_DISTILL, RUN_MODEL_DIR
from training.students import Student, StudentConfig
from training.teacher import Teacher, TeacherConfig, resolve_device, teacher_card
from training.text import LabelTextConfig, resolve_label_texts

log = logging.getLogger(__name__)


def _default_losses() -> list[dict[str, Any]]:
    return [{"type": "cls", "weight": 1.0}, {"type": "mse", "weight": 1.0},
            {"type": "im_cst", "weight": 1.0}, {"type": "vlprox", "weight": 1.0, "params": {"k": 256}}]


@dataclass
class DistillConfig:
    """One distillation job: teacher, student, data, label texts, losses, optimiser."""

    output_dir: str = "runs/distill"
    seed: int = 0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    text: LabelTextConfig = field(default_factory=LabelTextConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: list[dict[str, Any]] = field(default_factory=_default_losses)
    captions: str | None = None
    checkpoint_keep: int = 2

    def validate(self) -> None:
        """Validate every section and the loss list."""
        for part in (self.teacher, self.student, self.data, self.text, self.optim):
            part.validate()
        build_loss(self.losses)


@dataclass
class Prepared:
    """Everything a run needs besides the student: data, teacher features, label text features."""

    data: DistillData
    teacher: Teacher
    image_features: ImageFeatures
    text_id: torch.Tensor
    text_ood: torch.Tensor
    texts: dict[str, list[list[str]]]
    captions: torch.Tensor | None


def prepare(config: DistillConfig) -> Prepared:
    """Load data and teacher; compute (or reuse) the cached teacher image/text features."""
    data = load_distill_data(config.data)
    teacher = Teacher(config.teacher)
    texts = {"id": resolve_label_texts(data.id_labels, config.text, data.descriptions),
             "ood": resolve_label_texts(data.ood_labels, config.text, data.descriptions)}
    cache = config.teacher.cache_dir
    rank0_first = _is_distributed() and dist.get_rank() != 0
    if rank0_first:
        dist.barrier()
    feats = teacher_image_features(teacher, data.train, cache, config.data.max_corrupt_fraction,
                                   config.data.num_workers, desc="teacher features (train)")
    text_id = teacher_text_features(teacher, texts["id"], cache)
    text_ood = teacher_text_features(teacher, texts["ood"], cache)
    captions = _caption_features(config, data, teacher) if build_loss(config.losses).needs_captions else None
    if _is_distributed() and not rank0_first:
        dist.barrier()
    return Prepared(data, teacher, feats, text_id, text_ood, texts, captions)


def _caption_features(config: DistillConfig, data: DistillData, teacher: Teacher) -> torch.Tensor:
    """Teacher text feature of each training image's caption (file: JSON {path relative to data root: caption})."""
    if not config.captions:
        raise ValueError("the 'cap' loss needs per-image captions: set `captions` to a JSON file "
                         "{image path relative to data.root: caption}")
    table = json.loads(Path(config.captions).read_text())
    rel = [str(p.relative_to(data.root)) for p in data.train.paths]
    missing = [r for r in rel if r not in table]
    if missing:
        raise ValueError(f"{config.captions} has no caption for {len(missing)} training images, e.g. {missing[:3]}")
    return teacher_text_features(teacher, [[table[r]] for r in rel], config.teacher.cache_dir)


def distill(config: DistillConfig, resume: bool = False) -> Path:
    """Run the distillation job; returns the model dir (config.output_dir/model; the run dir output_dir keeps
    config.yaml, metrics and checkpoints)."""
    _init_distributed()
    rank, world = (dist.get_rank(), dist.get_world_size()) if _is_distributed() else (0, 1)
    out = Path(config.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(config))
    prep = prepare(config)
    device = resolve_device(config.teacher.device)
    if _is_distributed() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(config.seed + rank)  # after prepare(): a cache miss must not change the student's init
    student = Student(config.student, prep.teacher.embed_dim, prep.teacher.image_size).to(device)
    if student.edu is not None:
        student.set_attention_text(prep.text_id)
    criterion = build_loss(config.losses).to(device)
    valid = prep.image_features.valid.nonzero().flatten().tolist()
    sampler = EpochPermutation(valid, config.seed, rank, world)
    transform = image_transform(prep.teacher.image_size, prep.teacher.mean, prep.teacher.std, config.data.augment)
    loader = DataLoader(ImageDataset(prep.data.train, transform), batch_size=config.optim.batch_size,
                        sampler=sampler, num_workers=config.data.num_workers,
                        drop_last=len(sampler) > config.optim.batch_size)
    optimizer, scheduler = build_optimizer(list(student.parameters()) + list(criterion.parameters()),
                                           config.optim, len(loader))
    start_epoch, step = 0, 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, student, optimizer, scheduler)
        _check_same_run(state.get("run", {}), _run_identity(config), ckpt)
        start_epoch, step = state["epoch"], state["step"]
        log.info("resumed from %s (epoch %d, step %d)", ckpt, start_epoch, step)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", out)
    model = DistributedDataParallel(student) if _is_distributed() else student
    writer = tensorboard_writer(out) if rank == 0 else None
    text_id = prep.text_id.to(device)
    teacher_img = prep.image_features.features
    use_amp = config.optim.amp and device.type == "cuda"
    for epoch in range(start_epoch, config.optim.epochs):
        sampler.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"distill epoch {epoch + 1}/{config.optim.epochs}", unit="batch", disable=rank != 0)
        for images, targets, index in bar:
            images, targets = images.to(device, non_blocking=True), targets.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                feats = model(images)
            batch = DistillBatch(student=feats.float(), teacher_img=teacher_img[index].to(device), text=text_id,
                                 labels=targets,
                                 captions=prep.captions[index].to(device) if prep.captions is not None else None)
            loss, terms = criterion(batch)
            optimizer_step(loss, optimizer, scheduler, config.optim.schedule)
            step += 1
            seen += len(images)
            accumulate_terms(sums, loss, terms, len(images))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if scheduler is not None and config.optim.schedule == "step":
            scheduler.step()
        record = {"epoch": epoch + 1, "step": step, "images_per_s": seen * world / (time.perf_counter() - t0),
                  "lr": optimizer.param_groups[0]["lr"], **{f"loss/{k}": v / max(seen, 1) for k, v in sums.items()}}
        if rank == 0:
            log_epoch(out, record, writer)
            save_checkpoint(out, epoch + 1, student, optimizer, scheduler,
                            {"step": step, "run": _run_identity(config)}, keep=config.checkpoint_keep)
    if rank == 0:
        card = ModelCard(student=to_dict(config.student), embed_dim=prep.teacher.embed_dim,
                         image_size=prep.teacher.image_size, mean=list(prep.teacher.mean), std=list(prep.teacher.std),
                         teacher=teacher_card(prep.teacher),
                         labels={"id": prep.data.id_labels, "ood": prep.data.ood_labels}, texts=prep.texts,
                         info={"epochs": config.optim.epochs, "steps": step, "dataset": str(prep.data.root)},
                         kind=KIND_DISTILL, training=to_dict(config))
        write_model_dir(out / RUN_MODEL_DIR, student.cpu(), card, {"id": prep.text_id, "ood": prep.text_ood})
    if writer is not None:
        writer.close()
    if _is_distributed():
        dist.barrier()
    return out / RUN_MODEL_DIR


def _run_identity(config: DistillConfig) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (speed-only settings excluded)."""
    full = to_dict(config)
    return {"seed": full["seed"], "student": full["student"], "optim": full["optim"], "losses": full["losses"],
            "text": full["text"], "teacher": {k: full["teacher"][k] for k in ("model", "pretrained")},
            "data_root": str(Path(config.data.root).resolve())}


def _check_same_run(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume a checkpoint made with other settings (it would silently mix two runs)."""
    changed = sorted(k for k in current if k in saved and saved[k] != current[k])
    if changed:
        detail = "; ".join(f"{k}: {saved[k]} -> {current[k]}" for k in changed[:3])
        raise ValueError(f"cannot resume {ckpt}: it was made with other settings ({detail}); "
                         "use another output_dir or the original settings")


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _init_distributed() -> None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
