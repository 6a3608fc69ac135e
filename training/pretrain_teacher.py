"""`vlkd pretrain-teacher`: pretraining of a small open_clip model on renders of ALL categories, and optionally
on cluttered table scenes of them, so it plays CLIP's role in the offline mini-world (for single objects and
for "is X in this scene?"). The result is an open_clip `local-dir:` folder.

Samples: single-object renders, optionally the crops of every visible object cut from clutter scenes with the
simulator's boxes (occluded ones included) and the whole scenes. Losses: CLIP's contrastive loss over each batch's
(image, caption) pairs, where a scene's caption lists its visible objects ("a table with a banana, a hammer and a
dice.") and, with `multi_positive`, samples of the same object are each other's positives; a naming loss of each
render and crop against every category's prompt (all the similar names are its negatives); and a multi-label
presence loss (SigLIP-style sigmoid) between every image and one prompt per category ("there is a banana in this
image."). With `select_split`, that split's scenes are held out and pick the epoch (crop top-1 and presence AUC)."""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vlkd_formats.config import dump_config, load_config
from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.data import DatasetError, scan_split
from training.grasp.data import read_episodes
from training.grasp.regions import crop_box
from training.loop import EpochPermutation
from training.teacher import PACKAGED_MODEL_CONFIGS, resolve_device
from training.text import readable_name
from vlkd_formats.atomic_io import atomic_write, atomic_write_json, atomic_write_text
from vlkd_formats.dataset_dir import label_slug, read_dataset_info
from vlkd_formats.image_codec import open_rgb

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Pretraining job: renders of every category (a dataset dir's `train/`), captions, schedule."""

    data_root: str = "data/teacher_renders"
    output_dir: str = "runs/teacher"
    model: str = "VLKD-Mini"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    device: str = "auto"
    caption_templates: list[str] = field(default_factory=lambda: [
        "a photo of a {name}.", "a {name}.", "a rendering of a {name} on a table.", "{name}: {description}",
        "a photo of a {name}. {description}"])
    # A clutter dataset dir (`vlkd collect clutter --split none`, another seed than any evaluation data): its
    # base-camera frames join the renders, captioned with their visible objects. null: renders only.
    clutter_root: str | None = None
    scene_templates: list[str] = field(default_factory=lambda: [
        "a table with {objects}.", "a photo of {objects} on a table.", "{objects} lying on a wooden table."])
    presence_templates: list[str] = field(default_factory=lambda: [
        "a photo of a {name}.", "there is a {name} in this image.", "you can find a {name} in this image."])
    presence_weight: float = 0.0  # weight of the multi-label presence loss; 0 = contrastive only
    scene_contrastive: bool = True  # scenes also join the contrastive loss with their captions (else presence only)
    # Collection configs (sim/configs names or YAML files) that render data_root / clutter_root first (the collectors
    # resume an unfinished dir and reuse a finished one); null: the dirs must exist.
    renders_collect: str | None = None
    clutter_collect: str | None = None
    crops: bool = False  # clutter_root's object crops (training.grasp.regions.crop_box) join as captioned samples
    scenes: bool = True  # clutter_root's whole frames join as samples
    min_crop_pixels: int = 6  # the least area (pixels) of an object's visible box that gives a crop
    multi_positive: bool = False  # contrastive positives: every sample naming the same object (scenes: own caption)
    name_weight: float = 0.0  # weight of the naming loss (render / crop vs all categories' name_template prompts)
    name_template: str = "a photo of a {name}."
    # clutter_root's split held out from training; its scenes pick the epoch (crop top-1 among all names + presence
    # ROC AUC, training.teacher_eval). null: every split trains and the last epoch is kept.
    select_split: str | None = None
    run_dir: str | None = None  # checkpoints (--resume) and the selection log; default: output_dir + ".run"
    image_size: int | None = None  # the model's input size when it differs from its config's

    def run_path(self) -> Path:
        """Where checkpoints, the selection log and the evaluation cache go."""
        return Path(self.run_dir or f"{self.output_dir}.run")

    def validate(self) -> None:
        """Check ranges and templates."""
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.presence_weight < 0 or self.name_weight < 0:
            raise ValueError(f"pretrain needs epochs >= 1, batch_size >= 2, lr > 0, presence_weight >= 0, "
                             f"name_weight >= 0; got {self.epochs}, {self.batch_size}, {self.lr}, "
                             f"{self.presence_weight}, {self.name_weight}")
        if (self.crops or self.select_split) and not self.clutter_root:
            raise ValueError("crops and select_split need clutter_root (a clutter dataset dir)")
        for key, slot in (("caption_templates", "{name}"), ("presence_templates", "{name}"),
                          ("scene_templates", "{objects}"), ("name_template", "{name}")):
            templates = getattr(self, key)
            templates = [templates] if isinstance(templates, str) else templates
            if not templates:
                raise ValueError(f"{key} is empty")
            for t in templates:
                if slot not in t:
                    raise ValueError(f"{key} entry {t!r} must contain {slot}")


def captions_for(label: str, description: str, templates: list[str]) -> list[str]:
    """Caption candidates of a label from its readable name and description."""
    name = readable_name(label)
    return [t.format(name=name, description=description or name).strip() for t in templates]


def scene_caption(objects: list[str], template: str, rng: random.Random) -> str:
    """A scene's caption: its objects in random order, 'a banana, a hammer and a dice', in `template`."""
    names = [f"a {n}" for n in rng.sample(objects, len(objects))]
    phrase = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return template.format(objects=phrase)


@dataclass
class _Sample:
    path: Path
    objects: list[str]  # readable names of the visible objects
    captions: list[str]  # fixed captions (renders, crops); empty for scenes, captioned from `objects` when drawn
    box: tuple[int, int, int, int] | None = None  # the crop (left, top, right, bottom) of a clutter object


class _CaptionedImages(Dataset):
    """(image, caption tokens, multi-hot presence over `categories`) per render or scene."""

    def __init__(self, samples: list[_Sample], categories: list[str], scene_templates: list[str], transform: Any,
                 tokenizer: Any, seed: int):
        self.samples, self.scene_templates = samples, scene_templates
        self.transform, self.tokenizer = transform, tokenizer
        self.index = {name: i for i, name in enumerate(categories)}
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(image, caption tokens, presence, group): group = the category of a render or crop, -1 - i for a scene."""
        sample = self.samples[i]
        caption = self.rng.choice(sample.captions) if sample.captions else \
            scene_caption(sample.objects, self.rng.choice(self.scene_templates), self.rng)
        present = torch.zeros(len(self.index))
        present[[self.index[n] for n in sample.objects]] = 1.0
        image = open_rgb(sample.path)
        if sample.box is not None:
            image = image.crop(sample.box)
        group = self.index[sample.objects[0]] if sample.captions else -1 - i
        return self.transform(image), self.tokenizer([caption])[0], present, group


def _render_samples(config: PretrainConfig) -> tuple[list[_Sample], list[str]]:
    root = Path(config.data_root)
    images = scan_split(root / "train")
    if not len(images):
        raise ValueError(f"{root / 'train'} holds no images; collect renders of all categories first "
                         "(vlkd collect classification --split none)")
    descriptions = {label_slug(k): v for k, v in read_dataset_info(root).descriptions.items()} \
        if (root / "dataset.json").is_file() else {}
    captions = [captions_for(lab, descriptions.get(lab, ""), config.caption_templates) for lab in images.labels]
    samples = [_Sample(path, [readable_name(images.labels[t])], captions[t])
               for path, t in zip(images.paths, images.targets)]
    return samples, images.labels


def _scene_samples(root: Path, categories: list[str], config: PretrainConfig) -> list[_Sample]:
    """Base-camera frames with at least one visible object (`config.scenes`) and the crop of each object with at
    least `min_crop_pixels` visible pixels (`config.crops`), from every split but `select_split`."""
    if not root.is_dir():
        raise DatasetError(f"clutter_root {root} does not exist (collect one with `vlkd collect clutter --split none`)")
    episodes = read_episodes(root, read_dataset_info(root), ["base_rgb"])
    unknown = sorted({n for eps in episodes.values() for ep in eps for n in ep.objects} - set(categories))
    if unknown:
        raise DatasetError(f"clutter_root {root} holds objects the renders lack: {unknown[:5]}; the teacher's "
                           "renders must cover every category of its scenes")
    if config.select_split and not episodes.get(config.select_split):
        raise DatasetError(f"clutter_root {root} has no {config.select_split!r} scenes to select on (splits: "
                           f"{sorted(episodes)})")
    size = None
    samples = []
    for split, eps in episodes.items():
        if split == config.select_split:
            continue
        for ep in eps:
            visible = sorted(n for n, o in ep.objects.items() if o.present and o.visible_fraction > 0)
            if visible and config.scenes:
                samples.append(_Sample(ep.images["base_rgb"], visible, []))
            for name, o in ep.objects.items() if config.crops else ():
                x0, y0, x1, y1 = o.bbox or (0, 0, -1, -1)
                if (x1 - x0 + 1) * (y1 - y0 + 1) < config.min_crop_pixels:
                    continue
                size = size or open_rgb(ep.images["base_rgb"]).size
                captions = captions_for(name, "", [t for t in config.caption_templates if "{description}" not in t])
                samples.append(_Sample(ep.images["base_rgb"], [name], captions, crop_box(o.bbox, *size)))
    if not samples:
        raise DatasetError(f"clutter_root {root} has no episode with a visible object")
    return samples


def pretrain_teacher(config: PretrainConfig, resume: bool = False) -> Path:
    """Render the data when collection configs are named, train the small CLIP on renders (and scene crops and
    scenes), checkpointing every epoch (`resume` continues the last one), and write an open_clip local-dir folder
    (the selected epoch's with `select_split`); returns it."""
    import open_clip

    config.validate()
    torch.manual_seed(config.seed)
    collect_teacher_data(config)
    samples, labels = _render_samples(config)
    categories = [readable_name(lab) for lab in labels]
    n_renders = len(samples)
    if config.clutter_root:
        scenes = _scene_samples(Path(config.clutter_root), categories, config)
        log.info("pretraining on %d renders and %d scene samples of %d categories", len(samples), len(scenes),
                 len(categories))
        samples += scenes
    open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
    device = resolve_device(config.device)
    model, preprocess_train, _ = open_clip.create_model_and_transforms(
        config.model, pretrained=None, device=device, aug_cfg={"scale": (0.7, 1.0)},
        **({"force_image_size": config.image_size} if config.image_size else {}))
    tokenizer = open_clip.get_tokenizer(config.model)
    dataset = _CaptionedImages(samples, categories, config.scene_templates, preprocess_train, tokenizer, config.seed)
    sampler = EpochPermutation(list(range(len(dataset))), config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)
    if not len(loader):
        raise ValueError(f"{len(samples)} images are fewer than one batch of {config.batch_size}")
    presence = PresenceLoss().to(device)
    prompt_tokens = [tokenizer([t.format(name=n) for n in categories]) for t in config.presence_templates]
    name_tokens = tokenizer([config.name_template.format(name=n) for n in categories])
    template_rng = random.Random(config.seed)
    parts = nn.ModuleDict({"clip": model, "presence": presence})
    opt = torch.optim.AdamW(parts.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    run_dir = config.run_path()
    start, history = 0, []
    folder = latest_checkpoint(run_dir) if resume else None
    if folder is not None:
        state = load_checkpoint(folder, parts, opt, sched)
        start, history = state["epoch"], state["history"]
        template_rng.setstate(_rng_state(state["template_rng"]))
        log.info("resumed %s at epoch %d of %d", run_dir, start, config.epochs)
    for epoch in range(start, config.epochs):
        model.train()
        sampler.set_epoch(epoch)
        dataset.rng = random.Random(config.seed * 1009 + epoch)
        bar = tqdm(loader, desc=f"pretrain teacher {epoch + 1}/{config.epochs}", unit="batch")
        for batch_images, tokens, present, group in bar:
            image_features, text_features, logit_scale = model(batch_images.to(device), tokens.to(device))[:3]
            group = group.to(device)
            pairs = torch.ones_like(group, dtype=torch.bool) if config.scene_contrastive else group >= 0
            contrastive = contrastive_loss(image_features[pairs], text_features[pairs], logit_scale,
                                           group[pairs] if config.multi_positive else None) if pairs.sum() > 1 \
                else image_features.sum() * 0.0  # a batch of scenes only: nothing to contrast
            loss = contrastive
            if config.name_weight > 0 and (group >= 0).any():
                names = model.encode_text(name_tokens.to(device), normalize=True)
                single = group >= 0
                loss = loss + config.name_weight * F.cross_entropy(
                    logit_scale * image_features[single] @ names.T, group[single])
            if config.presence_weight > 0:
                prompts = model.encode_text(template_rng.choice(prompt_tokens).to(device), normalize=True)
                loss = loss + config.presence_weight * presence(image_features, prompts, present.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            bar.set_postfix(loss=f"{loss.item():.3f}", clip=f"{contrastive.item():.3f}")
        figures = _select_figures(model.eval(), config, labels, run_dir, epoch) if config.select_split else {}
        history.append({"epoch": epoch + 1, "loss": float(loss.item()), **figures})
        save_checkpoint(run_dir, epoch + 1, parts, opt, sched, {
            "history": history, "template_rng": _rng_json(template_rng.getstate())})
        atomic_write_json(run_dir / "history.json", history)
    best = max(history, key=lambda h: h.get("score", 0.0)) if config.select_split else history[-1]
    if config.select_split:
        log.info("selected epoch %d of %d on %s's %s scenes (score %.3f)", best["epoch"], config.epochs,
                 config.clutter_root, config.select_split, best["score"])
        shutil.copytree(run_dir / "selection" / f"epoch-{best['epoch']:04d}", config.output_dir, dirs_exist_ok=True)
        out = Path(config.output_dir)
    else:
        out = _write_local_dir(model.eval(), config, labels, len(samples) - n_renders, Path(config.output_dir))
    atomic_write_json(out / "labels.json", {"pretrained_on": labels, "scenes": len(samples) - n_renders,
                                            "selected": best})
    return out


def collect_teacher_data(config: PretrainConfig) -> None:
    """Render data_root and clutter_root with their collection configs, where named (resumed or reused)."""
    if not (config.renders_collect or config.clutter_collect):
        return
    from sim.collect_classification import collect_classification
    from sim.collect_clutter import collect_clutter
    from sim.config import ClassificationConfig, ClutterConfig

    if config.renders_collect:
        collect_classification(load_config(ClassificationConfig, config.renders_collect), config.data_root)
    if config.clutter_collect:
        if not config.clutter_root:
            raise ValueError("clutter_collect needs clutter_root (where the scenes go)")
        collect_clutter(load_config(ClutterConfig, config.clutter_collect), config.clutter_root)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     groups: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over a batch's (image, text) pairs; with `groups`, every pair of the same group
    is a positive (soft targets spread evenly over them), so two renders of one object are not pushed apart."""
    logits = logit_scale * image @ text.T
    if groups is None:
        target = torch.eye(len(logits), device=logits.device)
    else:
        target = (groups[:, None] == groups[None, :]).float()
    target = target / target.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T)) / 2


def _select_figures(model: nn.Module, config: PretrainConfig, labels: list[str], run_dir: Path, epoch: int
                    ) -> dict[str, float]:
    """Write this epoch's local-dir under run_dir/selection and measure it on clutter_root's `select_split`
    scenes (training.teacher_eval): crop top-1 among all names, presence ROC AUC, their mean `score`."""
    from training.teacher import Teacher, TeacherConfig
    from training.teacher_eval import clutter_figures

    folder = _write_local_dir(model, config, labels, 0, run_dir / "selection" / f"epoch-{epoch + 1:04d}")
    teacher = Teacher(TeacherConfig(model=f"local-dir:{folder}", pretrained=None, device=config.device))
    f = clutter_figures(teacher, str(config.clutter_root), str(run_dir / "selection_cache"), [config.select_split])
    crops, auc = f["crop_top1_all"], f["presence_auc"]
    shares = {k: f["crops"][k] for k in ("id", "ood")}
    crop = sum(crops[k] * shares[k] for k in shares if shares[k]) / max(sum(shares.values()), 1)
    presence = float(np.nanmean([auc["id"], auc["ood"]]))
    log.info("epoch %d on %s scenes: crop top-1 (all names) %.3f, presence ROC AUC %.3f", epoch + 1,
             config.select_split, crop, presence)
    return {"crop_top1_all": crop, "presence_auc": presence, "score": (crop + presence) / 2}


def _rng_json(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _rng_state(value: list) -> tuple:
    return value[0], tuple(value[1]), value[2]


class PresenceLoss(nn.Module):
    """Sigmoid loss of 'is category c in image i' from scale * cos(image, prompt_c) + bias, summed over the
    categories and averaged over images; SigLIP's initial scale 10 and bias -10. Used in training only."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, image_features: torch.Tensor, prompts: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        logits = self.log_scale.exp() * image_features @ prompts.T + self.bias
        return F.binary_cross_entropy_with_logits(logits, present, reduction="sum") / len(logits)


def _write_local_dir(model: torch.nn.Module, config: PretrainConfig, labels: list[str], scenes: int, out: Path
                     ) -> Path:
    """open_clip_config.json + open_clip_model.safetensors (fp16) + the job's config, in `out`."""
    import open_clip

    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / "open_clip_model.safetensors", lambda tmp: save_file(state, tmp))
    model_cfg = open_clip.get_model_config(config.model)
    if config.image_size:
        model_cfg = {**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "image_size": config.image_size}}
    atomic_write_json(out / "open_clip_config.json", {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"size": model.visual.image_size, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic",
                           "resize_mode": "shortest"}})
    atomic_write_text(out / "pretrain_config.yaml", dump_config(config))
    atomic_write_json(out / "labels.json", {"pretrained_on": labels, "scenes": scenes})
    log.info("teacher written to %s (load with teacher.model=local-dir:%s teacher.pretrained=null)", out, out)
    return out


def write_teacher_card(teacher_dir: str | Path, result: dict[str, Any], command: str, config: PretrainConfig) -> Path:
    """Record how the teacher was made (data dirs with their collection seeds, the selected epoch, the command) and
    what it knows zero-shot (`result`: training.teacher_eval.evaluate_teacher's figures, each beside chance)."""
    from training.teacher_eval import teacher_table

    teacher_dir = Path(teacher_dir)
    made = json.loads((teacher_dir / "labels.json").read_text())
    data = {}
    for root in filter(None, (config.data_root, config.clutter_root)):
        settings = read_dataset_info(root).settings if (Path(root) / "dataset.json").is_file() else {}
        data[root] = {k: settings.get(k) for k in ("kind", "seed", "image_size", "per_class", "episodes",
                                                   "views_per_scene", "camera_poses", "lighting") if k in settings}
    card = {"reproduce": command, "categories": len(made["pretrained_on"]), "scene_samples": made.get("scenes", 0),
            "data": data, "selected": made.get("selected"), "model": config.model, "figures": result["datasets"]}
    atomic_write_json(teacher_dir / "card.json", card)
    size_mb = (teacher_dir / "open_clip_model.safetensors").stat().st_size / 1e6
    sources = ", ".join(f"{root} (seed {d.get('seed')})" for root, d in data.items())
    selected = made.get("selected") or {}
    chosen = (f"The epoch was chosen on {config.clutter_root}'s held-out {config.select_split} scenes: epoch "
              f"{selected['epoch']}, crop top-1 among all names {100 * selected['crop_top1_all']:.1f}%, presence ROC "
              f"AUC {selected['presence_auc']:.3f}.\n\n") if config.select_split and selected else ""
    text = (f"# Offline mini-world teacher\n\nA small CLIP ({config.model}; open_clip config in "
            f"`open_clip_config.json`, {size_mb:.1f} MB fp16 safetensors) pretrained on all {len(made['pretrained_on'])}"
            f" categories of the offline object set: {sources}; {made.get('scenes', 0)} of its samples come from "
            f"clutter scenes (object crops and whole frames).\n\n{chosen}"
            f"Load: `teacher.model=local-dir:{teacher_dir}` `teacher.pretrained=null`.\n\n"
            f"Zero-shot, measured after training (never selected on):\n\n{teacher_table(result)}\n")
    return atomic_write_text(teacher_dir / "CARD.md", text + f"Reproduce: `{command}`\n")
