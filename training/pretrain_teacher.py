"""`vlkd pretrain-teacher`: pretraining of a small open_clip model on renders of ALL categories, and optionally
on cluttered table scenes of them, so it plays CLIP's role in the offline mini-world (for single objects and
for "is X in this scene?"). The result is an open_clip `local-dir:` folder.

Two losses: CLIP's contrastive loss over each batch's (image, caption) pairs, where a scene's caption lists its
visible objects ("a table with a banana, a hammer and a dice."), and a multi-label presence loss (SigLIP-style
sigmoid) between every image and one prompt per category ("there is a banana in this image.")."""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vlkd_formats.config import dump_config
from training.data import DatasetError, scan_split
from training.grasp.data import read_episodes
from training.grasp.text import POSITIVE_PROMPT
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

    def validate(self) -> None:
        """Check ranges and templates."""
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.presence_weight < 0:
            raise ValueError(f"pretrain needs epochs >= 1, batch_size >= 2, lr > 0, presence_weight >= 0; got "
                             f"{self.epochs}, {self.batch_size}, {self.lr}, {self.presence_weight}")
        for key, slot in (("caption_templates", "{name}"), ("presence_templates", "{name}"),
                          ("scene_templates", "{objects}")):
            templates = getattr(self, key)
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
    captions: list[str]  # fixed captions (renders); empty for scenes, captioned from `objects` when drawn


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

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        sample = self.samples[i]
        caption = self.rng.choice(sample.captions) if sample.captions else \
            scene_caption(sample.objects, self.rng.choice(self.scene_templates), self.rng)
        present = torch.zeros(len(self.index))
        present[[self.index[n] for n in sample.objects]] = 1.0
        return self.transform(open_rgb(sample.path)), self.tokenizer([caption])[0], present, not sample.captions


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


def _scene_samples(root: Path, categories: list[str]) -> list[_Sample]:
    """Base-camera frames of every episode with at least one visible object, from all splits."""
    if not root.is_dir():
        raise DatasetError(f"clutter_root {root} does not exist (collect one with `vlkd collect clutter --split none`)")
    episodes = read_episodes(root, read_dataset_info(root), ["base_rgb"])
    unknown = sorted({n for eps in episodes.values() for ep in eps for n in ep.objects} - set(categories))
    if unknown:
        raise DatasetError(f"clutter_root {root} holds objects the renders lack: {unknown[:5]}; the teacher's "
                           "renders must cover every category of its scenes")
    samples = []
    for eps in episodes.values():
        for ep in eps:
            visible = sorted(n for n, o in ep.objects.items() if o.present and o.visible_fraction > 0)
            if visible:
                samples.append(_Sample(ep.images["base_rgb"], visible, []))
    if not samples:
        raise DatasetError(f"clutter_root {root} has no episode with a visible object")
    return samples


def pretrain_teacher(config: PretrainConfig) -> Path:
    """Train the small CLIP on renders (and scenes) and write an open_clip local-dir folder; returns it."""
    import open_clip

    config.validate()
    torch.manual_seed(config.seed)
    samples, labels = _render_samples(config)
    categories = [readable_name(lab) for lab in labels]
    n_renders = len(samples)
    if config.clutter_root:
        scenes = _scene_samples(Path(config.clutter_root), categories)
        log.info("pretraining on %d renders and %d scenes of %d categories", len(samples), len(scenes),
                 len(categories))
        samples += scenes
    open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
    device = resolve_device(config.device)
    model, preprocess_train, _ = open_clip.create_model_and_transforms(
        config.model, pretrained=None, device=device,
        aug_cfg={"scale": (0.7, 1.0)})
    tokenizer = open_clip.get_tokenizer(config.model)
    dataset = _CaptionedImages(samples, categories, config.scene_templates, preprocess_train, tokenizer, config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed))
    if not len(loader):
        raise ValueError(f"{len(samples)} images are fewer than one batch of {config.batch_size}")
    presence = PresenceLoss().to(device)
    prompt_tokens = [tokenizer([t.format(name=n) for n in categories]) for t in config.presence_templates]
    template_rng = random.Random(config.seed)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(list(model.parameters()) + list(presence.parameters()), lr=config.lr,
                            weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    for epoch in range(config.epochs):
        bar = tqdm(loader, desc=f"pretrain teacher {epoch + 1}/{config.epochs}", unit="batch")
        for batch_images, tokens, present, is_scene in bar:
            image_features, text_features, logit_scale = model(batch_images.to(device), tokens.to(device))[:3]
            pairs = torch.ones_like(is_scene) if config.scene_contrastive else ~is_scene
            contrastive = loss_fn(image_features[pairs], text_features[pairs], logit_scale) if pairs.sum() > 1 \
                else image_features.sum() * 0.0  # a batch of scenes only: nothing to contrast
            loss = contrastive
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
    return _write_local_dir(model.eval(), config, labels, len(samples) - n_renders)


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


def _write_local_dir(model: torch.nn.Module, config: PretrainConfig, labels: list[str], scenes: int) -> Path:
    """open_clip_config.json + open_clip_model.safetensors (fp16) + the job's config."""
    import open_clip

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / "open_clip_model.safetensors", lambda tmp: save_file(state, tmp))
    atomic_write_json(out / "open_clip_config.json", {
        "model_cfg": open_clip.get_model_config(config.model),
        "preprocess_cfg": {"size": model.visual.image_size, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic",
                           "resize_mode": "shortest"}})
    atomic_write_text(out / "pretrain_config.yaml", dump_config(config))
    atomic_write_json(out / "labels.json", {"pretrained_on": labels, "scenes": scenes})
    log.info("teacher written to %s (load with teacher.model=local-dir:%s teacher.pretrained=null)", out, out)
    return out


def write_teacher_card(teacher_dir: str | Path, zero_shot: dict[str, float], data_root: str, command: str,
                       presence: dict[str, float] | None = None, clutter_root: str | None = None) -> Path:
    """Record how the teacher was made and what it knows zero-shot: accuracy on X_id / X_ood of `data_root`,
    and with `presence`, its "object in scene" ROC AUC on X_id / X_ood of the clutter set `clutter_root`."""
    teacher_dir = Path(teacher_dir)
    made = json.loads((teacher_dir / "labels.json").read_text())
    labels, scenes = made["pretrained_on"], made.get("scenes", 0)
    card = {"zero_shot": zero_shot, "eval_data": data_root, "reproduce": command, "categories": len(labels),
            "scenes": scenes}
    if presence is not None:
        card.update(presence_auc=presence, presence_eval_data=clutter_root)
    atomic_write_json(teacher_dir / "card.json", card)
    size_mb = (teacher_dir / "open_clip_model.safetensors").stat().st_size / 1e6
    scene_text = f" and on {scenes} cluttered table scenes of them (captions listing their visible objects)" \
        if scenes else ""
    text = (f"# Offline mini-world teacher\n\nA small CLIP (open_clip config in `open_clip_config.json`, "
            f"{size_mb:.1f} MB fp16 safetensors) pretrained on renders of all {len(labels)} categories "
            f"of the offline object set, with captions from their names and descriptions{scene_text}.\n\n"
            f"Load: `teacher.model=local-dir:{teacher_dir}` `teacher.pretrained=null` (the shipped copy is also "
            f"`teacher.model=vlkd-offline`).\n\n"
            f"Zero-shot accuracy on {data_root}: X_id {100 * zero_shot['id']:.1f}%, "
            f"X_ood {100 * zero_shot['ood']:.1f}%.\n\n")
    if presence is not None:
        text += (f"Zero-shot ROC AUC of \"{POSITIVE_PROMPT.format('X')}\" for the objects of {clutter_root}'s scenes: "
                 f"X_id {presence['id']:.3f}, X_ood {presence['ood']:.3f} (0.5 = chance).\n\n")
    return atomic_write_text(teacher_dir / "CARD.md", text + f"Reproduce: `{command}`\n")
