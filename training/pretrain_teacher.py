"""`vlkd pretrain-teacher`: contrastive pretraining of a small open_clip model on renders of ALL categories, so
it plays CLIP's role in the offline mini-world. The result is an open_clip `local-dir:` folder."""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from training.config import dump_config
from training.data import ImageList, label_slug, open_rgb, scan_split
from training.teacher import PACKAGED_MODEL_CONFIGS, resolve_device
from training.text import readable_name
from vlkd_ros.atomic_io import atomic_write, atomic_write_json, atomic_write_text
from vlkd_ros.dataset_dir import read_dataset_info

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

    def validate(self) -> None:
        """Check ranges and templates."""
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"pretrain needs epochs >= 1, batch_size >= 2, lr > 0; got {self.epochs}, "
                             f"{self.batch_size}, {self.lr}")
        for t in self.caption_templates:
            if "{name}" not in t:
                raise ValueError(f"caption template {t!r} must contain {{name}}")


def captions_for(label: str, description: str, templates: list[str]) -> list[str]:
    """Caption candidates of a label from its readable name and description."""
    name = readable_name(label)
    return [t.format(name=name, description=description or name).strip() for t in templates]


class _CaptionedImages(Dataset):
    def __init__(self, images: ImageList, captions: list[list[str]], transform: Any, tokenizer: Any, seed: int):
        self.images, self.captions, self.transform, self.tokenizer = images, captions, transform, tokenizer
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        caption = self.rng.choice(self.captions[self.images.targets[i]])
        return self.transform(open_rgb(self.images.paths[i])), self.tokenizer([caption])[0]


def pretrain_teacher(config: PretrainConfig) -> Path:
    """Train the small CLIP contrastively and write an open_clip local-dir folder; returns it."""
    import open_clip

    config.validate()
    torch.manual_seed(config.seed)
    root = Path(config.data_root)
    images = scan_split(root / "train")
    if not len(images):
        raise ValueError(f"{root / 'train'} holds no images; collect renders of all categories first "
                         "(vlkd collect classification --split none)")
    descriptions = {label_slug(k): v for k, v in read_dataset_info(root).descriptions.items()} \
        if (root / "dataset.json").is_file() else {}
    captions = [captions_for(lab, descriptions.get(lab, ""), config.caption_templates) for lab in images.labels]
    open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
    device = resolve_device(config.device)
    model, preprocess_train, _ = open_clip.create_model_and_transforms(
        config.model, pretrained=None, device=device,
        aug_cfg={"scale": (0.7, 1.0)})
    tokenizer = open_clip.get_tokenizer(config.model)
    loader = DataLoader(_CaptionedImages(images, captions, preprocess_train, tokenizer, config.seed),
                        batch_size=config.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed))
    if not len(loader):
        raise ValueError(f"{len(images)} images are fewer than one batch of {config.batch_size}")
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    for epoch in range(config.epochs):
        bar = tqdm(loader, desc=f"pretrain teacher {epoch + 1}/{config.epochs}", unit="batch")
        for batch_images, tokens in bar:
            image_features, text_features, logit_scale = model(batch_images.to(device), tokens.to(device))[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return _write_local_dir(model.eval(), config, images.labels)


def _write_local_dir(model: torch.nn.Module, config: PretrainConfig, labels: list[str]) -> Path:
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
    atomic_write_json(out / "labels.json", {"pretrained_on": labels})
    log.info("teacher written to %s (load with teacher.model=local-dir:%s teacher.pretrained=null)", out, out)
    return out


def write_teacher_card(teacher_dir: str | Path, zero_shot: dict[str, float], data_root: str, command: str) -> Path:
    """Record the teacher's zero-shot accuracy on X_id / X_ood and how it was made (card.json + CARD.md)."""
    teacher_dir = Path(teacher_dir)
    labels = json.loads((teacher_dir / "labels.json").read_text())["pretrained_on"]
    card = {"zero_shot": zero_shot, "eval_data": data_root, "reproduce": command, "categories": len(labels)}
    atomic_write_json(teacher_dir / "card.json", card)
    size_mb = (teacher_dir / "open_clip_model.safetensors").stat().st_size / 1e6
    text = (f"# Offline mini-world teacher\n\nA small CLIP (open_clip config in `open_clip_config.json`, "
            f"{size_mb:.1f} MB fp16 safetensors) pretrained contrastively on renders of all {len(labels)} categories "
            f"of the offline object set, with captions from their names and descriptions.\n\n"
            f"Load: `teacher.model=local-dir:{teacher_dir}` `teacher.pretrained=null` (the shipped copy is also "
            f"`teacher.model=vlkd-offline`).\n\n"
            f"Zero-shot accuracy on {data_root}: X_id {100 * zero_shot['id']:.1f}%, X_ood {100 * zero_shot['ood']:.1f}%.\n\n"
            f"Reproduce: `{command}`\n")
    return atomic_write_text(teacher_dir / "CARD.md", text)
