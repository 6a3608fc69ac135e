"""`vlkd train-grasp`: multi-label grasp-feasibility training of the student on clutter observations of Y_id,
with the distillation terms that apply to multi-object images, then threshold calibration and the model dir."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import latest_checkpoint, load_checkpoint, load_weights_into, save_checkpoint
from vlkd_formats.config import dump_config, to_dict
from training.feature_cache import teacher_image_features, teacher_text_features
from training.grasp.data import (ClutterData, EpisodeDataset, GraspDataConfig, MaskedEpisodeDataset,
                                 ObservationTransform, augment_observations, base_rgb_images, episode_targets,
                                 jitter_brightness, load_clutter_data, recolor_observations, stack_episodes,
                                 view_channels)
from training.grasp.detector import DetectorLossConfig, detector_loss, detector_targets, slot_labels
from training.grasp.fewshot import GraspFewShotConfig
from training.grasp.losses import GraspBatch, build_grasp_loss, needs_regions, needs_teacher_features
from training.grasp.regions import (RegionTargets, online_region_features, region_weights,
                                    teacher_region_features)
from training.grasp.model import (DetectorScorer, GraspScorer, calibrate_threshold, roc_auc, score_episodes,
                                  vocabulary_tensors)
from training.grasp.model_dir import GraspCard, ReplayBuffer, write_grasp_model_dir
from training.grasp.text import GraspTextConfig, TextTower, resolve_prompt_texts, text_config_card
from training.loop import (EpochPermutation, OptimConfig, accumulate_terms, build_optimizer, log_epoch,
                           optimizer_step, tensorboard_writer)
from training.model_dir import ModelCard, read_model_card
from training.students import Student, StudentConfig, StudentError
from training.teacher import Teacher, TeacherConfig, resolve_device, teacher_card
from vlkd_formats.model_dir import KIND_GRASP, RUN_CONFIG_FILE, RUN_MODEL_DIR, WEIGHTS_FILE, resolve_model_dir
from vlkd_formats.object_registry import ObjectEntry
from vlkd_runtime.observation import view_start
from vlkd_runtime.scoring import FIELDS

log = logging.getLogger(__name__)


def _default_losses() -> list[dict[str, Any]]:
    return [{"type": "asl", "weight": 1.0}, {"type": "im_cst", "weight": 1.0}]


@dataclass
class GraspTrainConfig:
    """One grasp training job: teacher, student, clutter data, prompts, optimiser, losses, few-shot defaults;
    a resumable checkpoint every `checkpoint_every` epochs and after the last; `student_init` starts the student
    from a `vlkd distill` model dir (same arch, channels, embedding and input size) instead of from scratch;
    `detector` weighs the detection terms of a `student.head=detector` student (training.grasp.detector);
    `match_vocabulary` calibrates and serves a detector's match as a softmax against its label names
    (`vlkd_runtime.scoring.DetectorScorer.vocabulary`) instead of a sigmoid per name (what training fits);
    `image_weight` weighs a distilled embedding's match (`student.image_embedding`) in a detector's answers."""

    output_dir: str = "runs/grasp"
    seed: int = 0
    student_init: str | None = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: GraspDataConfig = field(default_factory=GraspDataConfig)
    text: GraspTextConfig = field(default_factory=GraspTextConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: list[dict[str, Any]] = field(default_factory=_default_losses)
    fewshot: GraspFewShotConfig = field(default_factory=GraspFewShotConfig)
    detector: DetectorLossConfig = field(default_factory=DetectorLossConfig)
    calibration: Literal["f1", "accuracy"] = "f1"
    match_vocabulary: bool = False
    image_weight: float = 0.5
    replay_size: int = 64
    val_size: int = 64
    checkpoint_keep: int = 2
    checkpoint_every: int = 1

    def validate(self) -> None:
        """Validate every section; the student's input channels must match the stacked views."""
        for part in (self.teacher, self.student, self.data, self.text, self.optim, self.fewshot, self.detector):
            part.validate()
        loss = build_grasp_loss(self.losses)
        if self.student.head == "detector" and needs_teacher_features(loss):
            raise StudentError(f"losses {[k for k in loss.terms if k != 'region']} include a whole-image distillation "
                               "term, which a detector (student.head=detector, no global embedding) cannot take; "
                               "keep one multi-label term and 'region'")
        if self.match_vocabulary and self.student.head != "detector":
            raise StudentError("match_vocabulary applies to a detector (student.head=detector), not to "
                               f"student.head={self.student.head}")
        if not 0 <= self.image_weight <= 1:
            raise ValueError(f"image_weight must lie in [0, 1], got {self.image_weight}")
        if self.data.augment_recolor > 0 and not self.data.augment:
            raise ValueError(f"data.augment_recolor={self.data.augment_recolor} recolours augmented frames: set "
                             "data.augment=true")
        channels = view_channels(self.data.views)
        if self.student.in_chans != channels:
            raise StudentError(f"student.in_chans={self.student.in_chans} but data.views {self.data.views} stack "
                               f"{channels} channels; set student.in_chans={channels}")
        if self.replay_size < 0 or self.val_size < 0 or self.checkpoint_every < 1:
            raise ValueError(f"replay_size, val_size must be >= 0 and checkpoint_every >= 1; got {self.replay_size}, "
                             f"{self.val_size}, {self.checkpoint_every}")


class GraspNet(nn.Module):
    """Student + scorer: the trainable parts, checkpointed together."""

    def __init__(self, student: Student, scorer: GraspScorer | DetectorScorer):
        super().__init__()
        self.student, self.scorer = student, scorer


@dataclass
class _Texts:
    pos: dict[str, torch.Tensor]
    neg: dict[str, torch.Tensor | None]
    texts: dict[str, list[list[str]]]


def _text_features(config: GraspTrainConfig, teacher: Teacher, data: ClutterData) -> _Texts:
    out = _Texts({}, {}, {})
    for part, names in (("id", data.id_objects), ("ood", data.ood_objects)):
        pos, neg = resolve_prompt_texts(names, config.text, data.descriptions)
        out.texts[part] = pos
        out.pos[part] = teacher_text_features(teacher, pos, config.teacher.cache_dir)
        out.neg[part] = teacher_text_features(teacher, neg, config.teacher.cache_dir) if neg else None
    return out


def train_grasp(config: GraspTrainConfig, resume: bool = False) -> Path:
    """Train, calibrate the threshold on X_id and write the grasp model dir; returns it (config.output_dir/model:
    the run dir `output_dir` keeps config.yaml, metrics and checkpoints, the model dir what serving needs)."""
    config.validate()
    torch.manual_seed(config.seed)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_CONFIG_FILE).write_text(dump_config(config))
    data = load_clutter_data(config.data)
    teacher = Teacher(config.teacher)
    device = resolve_device(config.teacher.device)
    image_size = config.data.image_size or teacher.image_size
    transform = ObservationTransform(config.data.views, image_size, teacher.mean, teacher.std, config.data.depth_max_m)
    texts = _text_features(config, teacher, data)
    criterion = build_grasp_loss(config.losses).to(device)
    detector = config.student.head == "detector"
    regions = None
    if needs_regions(criterion):
        if not (config.student.dense or detector):
            raise StudentError("loss 'region' distils into per-location features: set student.dense=true")
        regions = teacher_region_features(teacher, data.train, config.teacher.cache_dir,
                                          desc="teacher region features (train)")
    teacher_img = None
    if needs_teacher_features(criterion):
        teacher_img = teacher_image_features(teacher, base_rgb_images(data.train), config.teacher.cache_dir,
                                             0.0, config.data.num_workers, desc="teacher features (train)").features
    student = Student(config.student, teacher.embed_dim, image_size)
    if config.student_init:
        init_student(student, config.student_init, teacher.embed_dim, image_size)
    if student.edu is not None:
        student.set_attention_text(texts.pos["id"])
    scorer = DetectorScorer() if detector else GraspScorer(local_weight=1.0 if config.student.dense else None)
    net = GraspNet(student, scorer).to(device)
    targets, _ = episode_targets(data.train, data.id_objects)
    slots = slot_labels(data.train, data.id_objects) if detector else None
    sampler = EpochPermutation(list(range(len(data.train))), config.seed)
    masked = regions is not None or detector
    dataset = (MaskedEpisodeDataset if masked else EpisodeDataset)(data.train, transform)
    loader = DataLoader(dataset, batch_size=config.optim.batch_size, sampler=sampler,
                        num_workers=config.data.num_workers, drop_last=len(sampler) > config.optim.batch_size)
    optimizer, scheduler = build_optimizer(list(net.parameters()) + list(criterion.parameters()), config.optim,
                                           len(loader))
    start_epoch, step = 0, 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, net, optimizer, scheduler)
        start_epoch, step = state["epoch"], state["step"]
        log.info("resumed from %s (epoch %d, step %d)", ckpt, start_epoch, step)
    pos, neg = texts.pos["id"].to(device), None if texts.neg["id"] is None else texts.neg["id"].to(device)
    if ckpt is None and neg is None and not detector:  # with a prompt pair, bias 0 is the paper's two-way softmax
        init_bias(net, dataset, targets, pos, neg, config.optim.batch_size, device)
    writer = tensorboard_writer(out)
    use_amp = config.optim.amp and device.type == "cuda"
    for epoch in range(start_epoch, config.optim.epochs):
        sampler.set_epoch(epoch)
        augment_rng = torch.Generator().manual_seed(config.seed * 100003 + epoch)  # exact on resume
        net.train()
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        for items in tqdm(loader, desc=f"grasp epoch {epoch + 1}/{config.optim.epochs}", unit="batch"):
            x, masks, index = items if masked else (items[0], None, items[1])
            if config.data.augment:
                augmented = augment_observations(x, augment_rng, config.data.augment_min_area, masks)
                x, masks = augmented if masks is not None else (augmented, None)
                x = jitter_brightness(x, augment_rng, config.data.augment_brightness, transform)
                x, recolored = recolor_observations(x, augment_rng, config.data.augment_recolor, transform)
            else:
                recolored = torch.zeros(len(x), dtype=torch.bool)
            online = None
            if regions is not None and recolored.any():  # the cached crops no longer show these frames' objects
                online = online_region_features(teacher, x, masks, regions.features.shape[1], recolored,
                                                view_start(config.data.views, "base_rgb"))
            x = x.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                feats = net.student(x)
            feats = feats.float()
            named = feats[..., :FIELDS + pos.shape[-1]] if detector else feats  # a detector's text-trained part
            local = named[..., FIELDS:] if detector else feats[:, 1:] if feats.ndim == 3 else None
            distilled = feats[..., -pos.shape[-1]:] if detector else local  # its distilled embedding, if it has one
            glob = local.mean(1) if detector else feats[:, 0] if feats.ndim == 3 else feats
            t_img = glob.detach() if teacher_img is None else teacher_img[index].to(device)
            extra = {} if regions is None else _region_batch(distilled, masks, regions, index, device, online)
            named_rows = ~recolored.to(device)  # a recoloured object no longer looks like its name
            batch = GraspBatch(student=glob, teacher_img=t_img, text=pos,
                               labels=torch.zeros(len(x), dtype=torch.long, device=device),
                               logits=net.scorer(named, pos, neg), targets=targets[index].to(device),
                               mask=named_rows[:, None].expand(-1, len(pos)), **extra)
            loss, terms = criterion(batch)
            if slots is not None:
                found = detector_targets(masks.to(device), slots.name.shape[1], math.isqrt(feats.shape[1]),
                                         config.detector)
                crops = None if regions is None else (extra["region_targets"], extra["region_valid"])
                det, det_terms = detector_loss(feats, found, slots.rows(index, device, named_rows), pos,
                                               net.scorer.match, config.detector, crops)
                loss = loss + det
                terms = {**terms, **{f"det_{k}": v.item() for k, v in det_terms.items()}}
            optimizer_step(loss, optimizer, scheduler, config.optim.schedule)
            step += 1
            seen += len(x)
            accumulate_terms(sums, loss, terms, len(x))
        if scheduler is not None and config.optim.schedule == "step":
            scheduler.step()
        log_epoch(out, {"epoch": epoch + 1, "step": step, "images_per_s": seen / (time.perf_counter() - t0),
                        "lr": optimizer.param_groups[0]["lr"], "scale": net.scorer.scale,
                        "bias": net.scorer.bias.item(),
                        **{f"loss/{k}": v / max(seen, 1) for k, v in sums.items()}}, writer)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.optim.epochs:
            save_checkpoint(out, epoch + 1, net, optimizer, scheduler, {"step": step}, keep=config.checkpoint_keep)
    if writer is not None:
        writer.close()
    net.eval()
    features = {"id": texts.pos["id"], "ood": texts.pos["ood"]}
    if texts.neg["id"] is not None:
        features.update(id_neg=texts.neg["id"], ood_neg=texts.neg["ood"])
    if detector:
        net.scorer.image_weight = config.image_weight
    if config.match_vocabulary:  # calibrated, and served, with the match against the label names
        net.scorer.vocabulary = vocabulary_tensors(features)
    calib_eps, calib_split = (data.x_id, config.data.id_split) if data.x_id else (data.train, config.data.train_split)
    scores = score_episodes(net.student, net.scorer, calib_eps, transform, pos, neg, config.optim.batch_size, device)
    calib_targets = episode_targets(calib_eps, data.id_objects)[0]
    threshold, value = calibrate_threshold(scores, calib_targets, config.calibration)
    calib_auc = roc_auc(scores, calib_targets)
    log.info("threshold %.3f (%s %.3f, ROC AUC %.3f on %s)", threshold, config.calibration, value, calib_auc,
             calib_split)
    replay = _replay_buffer(config, data, transform, teacher_img)
    card = ModelCard(student=to_dict(config.student), embed_dim=teacher.embed_dim, image_size=image_size,
                     mean=list(teacher.mean), std=list(teacher.std), teacher=teacher_card(teacher),
                     labels={"id": data.id_objects, "ood": data.ood_objects}, texts=texts.texts,
                     logit_scale=net.scorer.scale,
                     info={"task": "grasp", "epochs": config.optim.epochs, "steps": step, "dataset": str(data.root),
                           "student_init": config.student_init},
                     kind=KIND_GRASP, training=to_dict(config))
    grasp = GraspCard(views=list(config.data.views), image_size=image_size, depth_max_m=config.data.depth_max_m,
                      text=text_config_card(config.text), logit_scale=net.scorer.scale,
                      logit_bias=net.scorer.bias.item(), threshold=threshold,
                      calibration={"metric": config.calibration, "value": value, "split": calib_split,
                                   "pairs": int(scores.numel()), "auc": calib_auc},
                      objects={"id": data.id_objects, "ood": data.ood_objects, "split": data.split_source},
                      fewshot=to_dict(config.fewshot), local_weight=net.scorer.local, head=config.student.head,
                      match_vocabulary=config.match_vocabulary, image_weight=config.image_weight)
    objects = [ObjectEntry(name, data.descriptions.get(name, ""), "train") for name in data.id_objects]
    return write_grasp_model_dir(out / RUN_MODEL_DIR, net.student.cpu(), card, features, grasp,
                                 TextTower.from_teacher(teacher), replay, objects)


@torch.no_grad()
def init_bias(net: GraspNet, dataset: EpisodeDataset, targets: torch.Tensor, pos: torch.Tensor,
              neg: torch.Tensor | None, size: int, device: torch.device) -> None:
    """Start the scorer's bias where the first `size` training observations' logits give the graspable prior
    (without a negative prompt, cosines to every name are alike and large, and a bias learnt from 0 at the
    optimiser's pace would take most of the schedule to get there)."""
    n = min(size, len(dataset))
    x = torch.stack([dataset[i][0] for i in range(n)]).to(device)
    net.eval()
    logits = net.scorer(net.student(x), pos, neg) - net.scorer.bias
    prior = float(targets[:n].float().mean().clamp(0.01, 0.99))
    net.scorer.bias.fill_(math.log(prior / (1 - prior)) - float(logits.median()))
    net.train()
    log.info("scorer bias starts at %.3f (graspable prior %.3f)", float(net.scorer.bias), prior)


def _region_batch(local: torch.Tensor, masks: torch.Tensor, regions: RegionTargets, index: torch.Tensor,
                  device: torch.device, online: RegionTargets | None = None) -> dict[str, torch.Tensor]:
    """GraspBatch fields of region distillation for a batch of per-location embeddings (B, L, D) and masks: the
    cached crop features of the batch's episodes, or for the frames `online` has any valid slot in (the
    recoloured ones), the teacher's features of their crops as they are now."""
    side = math.isqrt(local.shape[1])
    weights, covered = region_weights(masks, regions.features.shape[1], side)
    features, valid = regions.features[index], regions.valid[index]
    if online is not None:
        rows = online.valid.any(1)
        features = torch.where(rows[:, None, None], online.features, features)
        valid = torch.where(rows[:, None], online.valid, valid)
    return {"local": local, "region_weights": weights.to(device), "region_targets": features.to(device),
            "region_valid": valid.to(device) & covered.to(device)}


def init_student(student: Student, model_dir: str, embed_dim: int, image_size: int) -> None:
    """Load a distilled student's weights (a model dir or the run dir holding it); its card must match this
    student's config, embedding and input size."""
    root = resolve_model_dir(model_dir)
    card = read_model_card(root)
    ours = {"student": to_dict(student.config), "embed_dim": embed_dim, "image_size": image_size}
    theirs = {"student": card.student, "embed_dim": card.embed_dim, "image_size": card.image_size}
    if ours != theirs:
        raise StudentError(f"student_init {model_dir} does not fit this training: it has {theirs}, this run needs "
                           f"{ours} (set student.* and data.image_size to match, or train it with the same teacher)")
    load_weights_into(student, root / WEIGHTS_FILE, "distilled student weights")
    log.info("student starts from %s", model_dir)


def _replay_buffer(config: GraspTrainConfig, data: ClutterData, transform: ObservationTransform,
                   teacher_img: torch.Tensor | None) -> ReplayBuffer:
    """A seeded sample of training observations (replay) and of X_id observations (validation)."""
    g = torch.Generator().manual_seed(config.seed)
    idx = torch.randperm(len(data.train), generator=g)[:config.replay_size].tolist()
    held_out = data.x_id or [ep for i, ep in enumerate(data.train) if i not in set(idx)]
    val = [held_out[i] for i in torch.randperm(len(held_out), generator=g)[:config.val_size].tolist()]
    train_eps = [data.train[i] for i in idx]
    return ReplayBuffer(list(data.id_objects), stack_episodes(train_eps, transform),
                        episode_targets(train_eps, data.id_objects)[0],
                        teacher_img[idx] if teacher_img is not None else None,
                        stack_episodes(val, transform), episode_targets(val, data.id_objects)[0])
