"""Synthetic test data: coloured-shape images in the anchor-repo layout, and overrides for tiny distillation runs."""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "bar")
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


def draw_sample(shape: str, colour: tuple[int, int, int], rng: random.Random, size: int = 48) -> Image.Image:
    """One image: a coloured shape at a random place and size on a noisy grey background."""
    bg = rng.randint(90, 160)
    img = Image.new("RGB", (size, size), (bg, bg, bg))
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        d.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=colour)
    return img


def make_dataset(root: Path, n_train: int = 10, n_id: int = 3, n_ood: int = 8, seed: int = 0) -> Path:
    """Write train/val_on_train (red shapes = Y_id) and val (blue shapes = Y_ood) ImageFolder splits."""
    rng = random.Random(seed)
    for shape in SHAPES:
        for split, colour, count in (("train", "red", n_train), ("val_on_train", "red", n_id), ("val", "blue", n_ood)):
            folder = root / split / f"{colour}_{shape}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw_sample(shape, COLOURS[colour], rng).save(folder / f"{i:03d}.png")
    return root


def tiny_overrides(data: Path, teacher: Path, out: Path, cache: Path) -> list[str]:
    """Dotted overrides for a seconds-long distillation run on the tiny dataset."""
    return [f"data.root={data}", "teacher.model=VLKD-Tiny", f"teacher.pretrained={teacher}",
            f"teacher.cache_dir={cache}", f"output_dir={out}", "optim.epochs=2", "optim.batch_size=16",
            "teacher.batch_size=16", "teacher.device=cpu"]
