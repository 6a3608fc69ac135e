"""Grasp fixtures: a small synthetic clutter dataset written through vlkd_formats.dataset_dir (coloured shapes on a
table, base + hand RGB-D views), a grasp model trained on it in seconds with the tiny teacher (its run dir is the
model dir's parent)."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlkd_formats.dataset_dir import DatasetInfo, ManifestWriter, write_dataset_info

OBJECTS = {  # name -> (shape, colour); each colour is unique, so a few shots identify an object
    "red circle": ("circle", (220, 40, 40)), "blue square": ("square", (40, 60, 220)),
    "yellow triangle": ("triangle", (230, 210, 40)), "white bar": ("bar", (245, 245, 245)),
    "green triangle": ("triangle", (40, 190, 60)), "purple circle": ("circle", (150, 50, 180)),
    "orange square": ("square", (250, 140, 20)), "cyan bar": ("bar", (40, 210, 220)),
}
ID_OBJECTS = ["red circle", "blue square", "yellow triangle", "white bar"]
OOD_OBJECTS = ["green triangle", "purple circle", "orange square", "cyan bar"]
TABLE_MM, OBJECT_MM = 900, 850


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
        h = (y1 - y0) // 3
        draw.rectangle((x0, y0 + h, x1, y1 - h), fill=fill)


def render_scene(names: list[str], rng: random.Random, size: int = 48) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Views {base_rgb, base_depth, hand_rgb, hand_depth}, the object mask base_seg (k + 1 = the k-th object) and
    object rows (with the visible pixels' bbox); later objects occlude earlier ones."""
    bg = rng.randint(90, 130)
    rgb = Image.new("RGB", (size, size), (bg, bg - 10, bg - 20))
    depth = np.full((size, size), TABLE_MM, np.uint16)
    masks = []
    for name in names:
        shape, colour = OBJECTS[name]
        r = rng.randint(size // 5, size // 3)
        cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        _draw(ImageDraw.Draw(rgb), shape, box, colour)
        mask_img = Image.new("L", (size, size), 0)
        _draw(ImageDraw.Draw(mask_img), shape, box, 255)
        mask = np.asarray(mask_img) > 0
        masks = [m & ~mask for m in masks] + [mask]
        depth[mask] = OBJECT_MM
    full = [m.sum() for m in masks]
    rows = []
    seg = np.zeros((size, size), np.uint8)
    for k, (name, mask) in enumerate(zip(names, masks)):
        visible = float(mask.sum() / max(full[names.index(name)], 1))
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None
        seg[mask] = k + 1
        rows.append({"name": name, "present": True, "visible_fraction": round(visible, 3), "graspable": visible >= 0.5,
                     "bbox": bbox})
    base = np.asarray(rgb)
    q = size // 4
    hand = np.asarray(Image.fromarray(base[q:-q, q:-q]).resize((size, size), Image.NEAREST))
    hand_depth = np.asarray(Image.fromarray(depth[q:-q, q:-q]).resize((size, size), Image.NEAREST)).astype(np.uint16)
    return {"base_rgb": base, "base_depth": depth, "hand_rgb": hand, "hand_depth": hand_depth, "base_seg": seg}, rows


def make_clutter_dataset(root: Path, n_train: int = 32, n_id: int = 12, n_ood: int = 72, seed: int = 0,
                         size: int = 48) -> Path:
    """Write a clutter dataset dir: train/val_on_train scenes of ID objects, val scenes mixing ID and OOD."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    descriptions = {n: f"a small {OBJECTS[n][0]} that is plain {n.split()[0]}" for n in OBJECTS}
    write_dataset_info(root, DatasetInfo(kind="clutter", labels=list(OBJECTS), descriptions=descriptions,
                                         split={"id": ID_OBJECTS, "ood": OOD_OBJECTS},
                                         settings={"generator": "tests/grasp_fixtures.py", "size": size}))
    plan = [("train", n_train), ("val_on_train", n_id), ("val", n_ood)]
    with ManifestWriter(root) as manifest:
        episode = 0
        for split, count in plan:
            for _ in range(count):
                if split == "val":
                    names = rng.sample(OOD_OBJECTS, 1) + rng.sample(ID_OBJECTS, rng.randint(0, 1))
                    rng.shuffle(names)
                else:
                    names = rng.sample(ID_OBJECTS, rng.randint(1, 2))
                views, rows = render_scene(names, rng, size)
                folder = root / "episodes" / f"{episode:05d}"
                folder.mkdir(parents=True, exist_ok=True)
                for view, array in views.items():
                    Image.fromarray(array).save(folder / f"{view}.png")
                manifest.append({"episode": f"{episode:05d}", "split": split, "seed": seed * 100000 + episode,
                                 "images": {v: f"episodes/{episode:05d}/{v}.png" for v in views}, "objects": rows})
                episode += 1
    return root


def grasp_overrides(data: Path, teacher: Path, out: Path, cache: Path) -> list[str]:
    """Dotted overrides for a seconds-long grasp training run on the synthetic clutter dataset."""
    return [f"data.root={data}", "data.image_size=32", "teacher.model=VLKD-Tiny", f"teacher.pretrained={teacher}",
            f"teacher.cache_dir={cache}", "teacher.device=cpu", "teacher.batch_size=32", f"output_dir={out}",
            "optim.epochs=6", "optim.batch_size=16", "optim.lr=0.003", "replay_size=24", "val_size=12",
            "checkpoint_every=100",
            "losses=[{type: bce}, {type: im_cst}]", "fewshot.losses=[{type: bce}]",
            "fewshot.steps=20", "fewshot.batch_size=16", "fewshot.lr=0.003",
            # A random text tower barely tells names apart inside the paper's long prompt; short prompts it can.
            "text.templates=['{}']", "text.negative_templates=['no {}']"]


@pytest.fixture
def torch_single_thread():
    """One intra-op thread: on a small machine shared with other jobs, two OpenMP threads are 2-5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clutter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic clutter dataset (4 ID objects, 4 OOD objects, 48 px RGB-D base and hand views)."""
    return make_clutter_dataset(tmp_path_factory.mktemp("clutter") / "clutter")


@pytest.fixture(scope="session")
def tiny_grasp_model(tiny_clutter: Path, tiny_teacher_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grasp model dir trained on `tiny_clutter` (RGB, 32 px): RUN/model, RUN being the training run dir (config,
    metrics, checkpoints); copy it before changing it."""
    from vlkd_formats.config import load_config
    from training.grasp.train import GraspTrainConfig, train_grasp

    tmp = tmp_path_factory.mktemp("grasp")
    config = load_config(GraspTrainConfig, None, grasp_overrides(tiny_clutter, tiny_teacher_file, tmp / "run",
                                                                  tmp / "cache"))
    return train_grasp(config)


def copy_model(model_dir: Path, dest: Path) -> Path:
    """A private copy of a model dir (tests that add objects change it)."""
    shutil.copytree(model_dir, dest)
    return dest


def train_through_cli(tmp: Path, data: Path, teacher: Path, overrides: list[str]) -> Path:
    """`vlkd train-grasp` of the seconds-long run on `data` with `overrides` on top, in `tmp`; its model dir."""
    from vlkd_ros.cli import main as cli

    args = grasp_overrides(data, teacher, tmp / "run", tmp / "cache") + overrides
    assert cli(["train-grasp", *args]) == 0
    return tmp / "run" / "model"


DENSE_OVERRIDES = ["student.arch=efficientnet_b0", "student.dense=true", "student.output_stride=8",
                   "losses=[{type: bce}, {type: im_cst}, {type: region}]", "data.augment=true"]


@pytest.fixture(scope="session")
def tiny_dense_grasp_model(tiny_clutter: Path, tiny_teacher_file: Path,
                           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense grasp model dir (EfficientNet-B0, per-location features on a 4x4 map, local aggregation, region
    distillation) trained on `tiny_clutter` through `vlkd train-grasp`; its answers carry locations."""
    return train_through_cli(tmp_path_factory.mktemp("grasp_dense"), tiny_clutter, tiny_teacher_file, DENSE_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_rgbd_grasp_model(tiny_clutter: Path, tiny_teacher_file: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-channel (base + hand RGB-D) grasp model dir trained for one epoch through `vlkd train-grasp`."""
    return train_through_cli(tmp_path_factory.mktemp("grasp_rgbd"), tiny_clutter, tiny_teacher_file, [
        "data.views=[base_rgb, base_depth, hand_rgb, hand_depth]", "student.in_chans=8", "optim.epochs=1"])


DETECTOR_OVERRIDES = ["student.head=detector", "data.image_size=48", "losses=[{type: bce}, {type: region}]",
                      "optim.epochs=12", "match_vocabulary=true"]


@pytest.fixture(scope="session")
def tiny_detector_grasp_model(tiny_clutter: Path, tiny_teacher_file: Path,
                              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector grasp model dir (ResNet18 + FPN at stride 8 on 48 px, a 6x6 map; class-agnostic heads, region
    distillation) trained on `tiny_clutter` through `vlkd train-grasp`; its answers carry boxes."""
    return train_through_cli(tmp_path_factory.mktemp("grasp_detector"), tiny_clutter, tiny_teacher_file,
                             DETECTOR_OVERRIDES)
