"""Distillation datasets: the anchor repo's train / val_on_train (X_id) / val (X_ood) ImageFolder layout,
which is also what `vlkd collect classification` writes (plus its dataset.json)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms

from vlkd_formats.dataset_dir import INFO_FILE, label_slug, read_dataset_info
from vlkd_formats.errors import VlkdError
from vlkd_formats.image_codec import is_image_file, open_rgb

log = logging.getLogger(__name__)


class DatasetError(VlkdError, ValueError):
    """A dataset dir is missing, empty or inconsistent."""


@dataclass
class DataConfig:
    """Where the images are and how they are read."""

    root: str = "data/classification"
    train_split: str = "train"
    id_split: str = "val_on_train"
    ood_split: str = "val"
    num_workers: int = 0
    max_corrupt_fraction: float = 0.01
    augment: bool = False

    def validate(self) -> None:
        """Check ranges."""
        if not 0 <= self.max_corrupt_fraction < 1:
            raise DatasetError(f"data.max_corrupt_fraction must be in [0, 1), got {self.max_corrupt_fraction}")


@dataclass
class ImageList:
    """Image paths with integer labels into `labels`."""

    paths: list[Path]
    targets: list[int]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: list[int]) -> "ImageList":
        """The images at `indices`, same label list."""
        return ImageList([self.paths[i] for i in indices], [self.targets[i] for i in indices], self.labels)


@dataclass
class DistillData:
    """The three splits of a distillation dataset and the label descriptions it carries."""

    root: Path
    train: ImageList
    x_id: ImageList
    x_ood: ImageList
    descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def id_labels(self) -> list[str]:
        """Y_id: labels seen in training."""
        return self.train.labels

    @property
    def ood_labels(self) -> list[str]:
        """Y_ood: labels never seen in training."""
        return self.x_ood.labels


def scan_split(root: Path, labels: list[str] | None = None) -> ImageList:
    """List `root/<label>/*.<image>`; labels default to the sorted sub-folders that hold images."""
    if not root.is_dir():
        raise DatasetError(f"split folder {root} does not exist")
    if labels is None:
        labels = sorted(d.name for d in root.iterdir() if d.is_dir() and _images_in(d))
    paths, targets = [], []
    for index, label in enumerate(labels):
        for p in _images_in(root / label):
            paths.append(p)
            targets.append(index)
    return ImageList(paths, targets, labels)


def load_distill_data(config: DataConfig) -> DistillData:
    """Read the three splits; Y_id = labels of the train split, Y_ood = labels of the OOD split not in Y_id."""
    root = Path(config.root)
    if not root.is_dir():
        raise DatasetError(f"dataset dir {root} does not exist (collect one with `vlkd collect classification`)")
    train = scan_split(root / config.train_split)
    if not len(train):
        raise DatasetError(f"{root / config.train_split} holds no images (expected {config.train_split}/<label>/*.png)")
    id_dir = root / config.id_split
    x_id = scan_split(id_dir, train.labels) if id_dir.is_dir() else ImageList([], [], train.labels)
    ood_dir = root / config.ood_split
    if not ood_dir.is_dir():
        raise DatasetError(f"OOD split {ood_dir} does not exist")
    ood_labels = [lab for lab in scan_split(ood_dir).labels if lab not in set(train.labels)]
    if not ood_labels:
        raise DatasetError(f"{ood_dir} holds no label outside the training labels: nothing is out of distribution")
    x_ood = scan_split(ood_dir, ood_labels)
    descriptions: dict[str, str] = {}
    if (root / INFO_FILE).is_file():
        info = read_dataset_info(root)
        descriptions = {label_slug(k): v for k, v in info.descriptions.items()}
    return DistillData(root, train, x_id, x_ood, descriptions)


def image_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    augment: bool = False) -> transforms.Compose:
    """CLIP-style preprocessing (resize, centre crop, normalise), optionally with light augmentation."""
    steps: list = [transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
                   transforms.CenterCrop(image_size)]
    if augment:
        steps += [transforms.RandomHorizontalFlip(), transforms.ColorJitter(0.2, 0.2, 0.2)]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


class ImageDataset(Dataset):
    """(image tensor, target, index) for the entries of an ImageList."""

    def __init__(self, images: ImageList, transform: transforms.Compose):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(open_rgb(self.images.paths[index])), self.images.targets[index], index


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
