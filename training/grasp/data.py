"""Clutter datasets for grasp feasibility: episodes, per-object labels, the ID/OOD object split, and the one
observation transform (views -> stacked, normalised channels) shared by training and the inference API."""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sim.ycb import paper_split
from training.data import DatasetError, ImageList
from vlkd_formats.dataset_dir import DatasetInfo, read_dataset_info, read_manifest
from vlkd_formats.image_codec import read_depth, read_label_png, read_rgb
from vlkd_formats.split import split_labels
from vlkd_runtime.observation import VIEWS, check_depth, check_rgb, rgb_offsets, view_channels
from vlkd_runtime.observation import check_views as check_known_views

log = logging.getLogger(__name__)

MASK_VIEW = "base_seg"  # the per-object mask of the base view, written by `vlkd collect clutter`


@dataclass
class ObjectSplitConfig:
    """Which objects are Y_id / Y_ood. `auto`: explicit lists if given, else the dataset's split, else the
    paper's YCB split when the dataset has the YCB objects, else a seeded 50/50 split of the labels."""

    mode: Literal["auto", "explicit", "dataset", "ycb", "half"] = "auto"
    id: list[str] = field(default_factory=list)
    ood: list[str] = field(default_factory=list)
    seed: int = 0

    def validate(self) -> None:
        """Explicit mode needs both lists, disjoint."""
        if self.mode == "explicit" and not (self.id and self.ood):
            raise DatasetError("data.split.mode=explicit needs non-empty data.split.id and data.split.ood")
        overlap = sorted(set(self.id) & set(self.ood))
        if overlap:
            raise DatasetError(f"objects {overlap} are in both data.split.id and data.split.ood")


@dataclass
class GraspDataConfig:
    """Where the clutter dataset is, which views the model stacks, how observations are sized, and whether
    training batches are augmented (random flip + a crop of at least `augment_min_area` of the image: crops
    that keep most of the table, so the labels of the objects on it still hold; and each observation's RGB
    scaled by a gain drawn log-uniformly from `augment_brightness`, as under dimmer or brighter lights);
    `augment_recolor` is the share of training frames whose colours are turned (recolor_observations): their
    objects no longer look like their names, so they train the class-agnostic heads and the teacher's crop
    embeddings of the recoloured frame, computed at that step, but no name term."""

    root: str = "data/clutter_offline"
    views: list[str] = field(default_factory=lambda: ["base_rgb"])
    image_size: int | None = None
    depth_max_m: float = 2.0
    split: ObjectSplitConfig = field(default_factory=ObjectSplitConfig)
    train_split: str = "train"
    id_split: str = "val_on_train"
    ood_split: str = "val"
    num_workers: int = 0
    augment: bool = False
    augment_min_area: float = 0.85
    augment_brightness: list[float] = field(default_factory=lambda: [1.0, 1.0])
    augment_recolor: float = 0.0

    def validate(self) -> None:
        """Check views, sizes, augmentation and the split."""
        check_views(self.views)
        if len(self.augment_brightness) != 2 or not 0 < self.augment_brightness[0] <= self.augment_brightness[1]:
            raise DatasetError(f"data.augment_brightness must be [low, high] gains with 0 < low <= high, got "
                               f"{list(self.augment_brightness)}")
        if not 0 <= self.augment_recolor <= 1:
            raise DatasetError(f"data.augment_recolor must be a share in [0, 1], got {self.augment_recolor}")
        if not 0.1 <= self.augment_min_area <= 1.0:
            raise DatasetError(f"data.augment_min_area must be in [0.1, 1] (the smallest crop, as a fraction of the "
                               f"image area), got {self.augment_min_area}")
        if self.image_size is not None and self.image_size < 16:
            raise DatasetError(f"data.image_size must be >= 16 (or null for the teacher's size), got {self.image_size}")
        if not self.depth_max_m > 0:
            raise DatasetError(f"data.depth_max_m must be > 0, got {self.depth_max_m}")
        self.split.validate()


def check_views(views: list[str]) -> None:
    """Views must be known, unique, and include base_rgb (the view the teacher sees); a DatasetError if not."""
    try:
        check_known_views(views)
    except ValueError as err:
        raise DatasetError(str(err)) from err


@dataclass
class ObjectLabel:
    """One object's state in an episode (`bbox`: x_min, y_min, x_max, y_max of its visible base-camera pixels,
    inclusive; None when not visible or the dataset has no masks; `supports_other`: another object rests on it)."""

    present: bool
    graspable: bool
    visible_fraction: float = 0.0
    bbox: tuple[int, int, int, int] | None = None
    supports_other: bool = False


@dataclass
class Episode:
    """One observation: image files per view and the labels of the objects placed in the scene, in the order of
    the manifest row (object k is pixel value k + 1 of the `base_seg` mask, when the dataset has one)."""

    id: str
    split: str
    images: dict[str, Path]
    objects: dict[str, ObjectLabel]

    @property
    def mask(self) -> Path | None:
        """The base camera's object mask (uint8 PNG: k + 1 = the k-th object, 0 = anything else), if any."""
        return self.images.get(MASK_VIEW)


@dataclass
class ClutterData:
    """The three episode splits of a clutter dataset and its object split."""

    root: Path
    info: DatasetInfo
    train: list[Episode]
    x_id: list[Episode]
    x_ood: list[Episode]
    id_objects: list[str]
    ood_objects: list[str]
    split_source: str

    @property
    def descriptions(self) -> dict[str, str]:
        """Rich descriptions of the objects, from dataset.json."""
        return dict(self.info.descriptions)


def episode_targets(episodes: list[Episode], names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(graspable float (N, C), present bool (N, C)) of `names` in each episode; unlisted objects are absent."""
    grasp = torch.zeros(len(episodes), len(names))
    present = torch.zeros(len(episodes), len(names), dtype=torch.bool)
    for i, ep in enumerate(episodes):
        for j, name in enumerate(names):
            obj = ep.objects.get(name)
            if obj is not None:
                grasp[i, j] = float(obj.graspable)
                present[i, j] = obj.present
    return grasp, present


def load_clutter_data(config: GraspDataConfig) -> ClutterData:
    """Read a clutter dataset dir (kind 'clutter') through its manifest, with the configured object split."""
    root = Path(config.root)
    if not root.is_dir():
        raise DatasetError(f"dataset dir {root} does not exist (collect one with `vlkd collect clutter`)")
    info = read_dataset_info(root)
    episodes = read_episodes(root, info, config.views)
    train = episodes.get(config.train_split, [])
    if not train:
        raise DatasetError(f"{root} has no episodes in split {config.train_split!r} (splits: {sorted(episodes)})")
    id_objects, ood_objects, source = resolve_object_split(info, config.split)
    leaked = sorted({n for ep in train for n, o in ep.objects.items() if o.present and n in set(ood_objects)})
    if leaked:
        raise DatasetError(f"OOD objects {leaked[:5]} appear in {config.train_split!r} episodes; the split "
                           f"({source}) must keep Y_ood out of training scenes")
    return ClutterData(root, info, train, episodes.get(config.id_split, []), episodes.get(config.ood_split, []),
                       id_objects, ood_objects, source)


def read_episodes(root: Path, info: DatasetInfo, views: list[str]) -> dict[str, list[Episode]]:
    """The episodes of a clutter dataset dir by split, each checked to hold `views` and only known objects."""
    if info.kind != "clutter":
        raise DatasetError(f"{root} is a {info.kind!r} dataset; this needs kind 'clutter' (vlkd collect clutter)")
    known = set(info.labels)
    episodes: dict[str, list[Episode]] = {}
    for row in read_manifest(root):
        ep = _episode(root, row, known, views)
        episodes.setdefault(ep.split, []).append(ep)
    return episodes


def resolve_object_split(info: DatasetInfo, config: ObjectSplitConfig) -> tuple[list[str], list[str], str]:
    """(Y_id, Y_ood, where the split came from) following `config.mode`."""
    labels = list(info.labels)
    mode = config.mode
    if mode == "auto":
        mode = ("explicit" if config.id or config.ood else "dataset" if info.split.get("id") and info.split.get("ood")
                else "ycb" if _ycb_names(labels) else "half")
    if mode == "explicit":
        ids, oods = list(config.id), list(config.ood)
    elif mode == "dataset":
        ids, oods = list(info.split.get("id", [])), list(info.split.get("ood", []))
        if not ids or not oods:
            raise DatasetError("data.split.mode=dataset but dataset.json has no split {id, ood}")
    elif mode == "ycb":
        found = _ycb_names(labels)
        if not found:
            raise DatasetError("data.split.mode=ycb but the dataset lacks the paper's YCB objects "
                               f"(e.g. {paper_split()['id'][0]}); its labels are {labels[:5]}...")
        ids, oods = found
    else:
        if len(labels) < 2:
            raise DatasetError(f"a label split needs at least 2 labels, got {len(labels)}")
        half = split_labels(labels, "random", 0.5, config.seed)
        ids, oods = half["id"], half["ood"]
    unknown = sorted(set(ids + oods) - set(labels))
    if unknown:
        raise DatasetError(f"split names objects the dataset does not have: {unknown[:5]}; labels: {labels[:10]}")
    if set(ids) & set(oods):
        raise DatasetError(f"objects {sorted(set(ids) & set(oods))[:5]} are both ID and OOD")
    return ids, oods, mode


def _ycb_key(name: str) -> str:
    return re.sub(r"^\d+[_ ]", "", name).replace("_", " ").strip().lower()


def _ycb_names(labels: list[str]) -> tuple[list[str], list[str]] | None:
    by_key = {_ycb_key(lab): lab for lab in labels}
    split = paper_split()
    ids = [by_key.get(_ycb_key(n)) for n in split["id"]]
    oods = [by_key.get(_ycb_key(n)) for n in split["ood"]]
    if None in ids or None in oods:
        return None
    return ids, oods


def _episode(root: Path, row: dict, known: set[str], views: list[str]) -> Episode:
    where = f"{root}/manifest.jsonl episode {row.get('episode')!r}"
    try:
        images = {view: root / rel for view, rel in row["images"].items()}
        objects = {o["name"]: ObjectLabel(bool(o["present"]), bool(o["graspable"]), float(o.get("visible_fraction", 0)),
                                          tuple(int(v) for v in o["bbox"]) if o.get("bbox") else None,
                                          bool(o.get("supports_other", False)))
                   for o in row["objects"]}
        episode = Episode(str(row["episode"]), str(row["split"]), images, objects)
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{where}: not a clutter row {{episode, split, images, objects}}: missing {err}") from err
    unknown = sorted(set(objects) - known)
    if unknown:
        raise DatasetError(f"{where} names objects not in dataset.json labels: {unknown[:5]}")
    missing = [v for v in views if v not in images]
    if missing:
        raise DatasetError(f"{where} has no {missing} image (has {sorted(images)}); change data.views")
    return episode


class ObservationTransform:
    """Views (HxWx3 uint8 RGB; HxW uint16 mm or float32 m depth) -> one (C, S, S) float tensor: each view is
    resized (shorter side) and centre-cropped to S, RGB normalised with the teacher's mean/std, depth clipped
    to [0, depth_max_m] and mapped to [-1, 1]."""

    def __init__(self, views: list[str], image_size: int, mean: list[float] | tuple[float, ...],
                 std: list[float] | tuple[float, ...], depth_max_m: float):
        check_views(list(views))
        self.views, self.image_size, self.depth_max_m = list(views), int(image_size), float(depth_max_m)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    @property
    def channels(self) -> int:
        """Stacked channel count."""
        return view_channels(self.views)

    @property
    def needs_depth(self) -> bool:
        """True when a depth view is stacked."""
        return any(VIEWS[v][0] == "depth" for v in self.views)

    def __call__(self, observation: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Stack the model's views of one observation; raises ValueError naming a missing or malformed view."""
        if not isinstance(observation, Mapping):
            raise ValueError(f"an observation must be a dict of views {self.views}, got {type(observation).__name__}")
        missing = [v for v in self.views if v not in observation]
        if missing:
            raise ValueError(f"observation lacks view(s) {missing}: this model stacks {self.views} "
                             f"(got {sorted(observation)})")
        return torch.cat([self._view(v, observation[v]) for v in self.views])

    def _view(self, view: str, array: np.ndarray) -> torch.Tensor:
        kind = VIEWS[view][0]
        x = check_rgb(view, array) if kind == "rgb" else check_depth(view, array)
        # One copy: the float conversion (CHW for RGB) straight from the caller's array, which may be read-only
        # (a view of a ROS message's buffer) and is never written to.
        if kind == "rgb":
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)).div_(255)
            t = self._resize(t, "bilinear").clamp_(0, 1)
            return (t - self.mean) / self.std
        t = torch.from_numpy(x.astype(np.float32))
        if x.dtype == np.int32:
            t.div_(1000.0)
        t = self._resize(t[None], "nearest").clamp_(0, self.depth_max_m)
        return t / self.depth_max_m * 2 - 1

    def _resize(self, t: torch.Tensor, mode: str) -> torch.Tensor:
        return resize_crop(t, self.image_size, mode)

    def read(self, episode: Episode) -> torch.Tensor:
        """Decode an episode's image files and stack them."""
        return self({v: read_view(v, episode.images[v]) for v in self.views})


def resize_crop(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(C, H, W) resized so the shorter side is `size` (bilinear with antialias, or nearest), centre-cropped to
    (C, size, size): the one geometry of every view and mask."""
    h, w = t.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        t = F.interpolate(t[None], size=(nh, nw), mode=mode, **kwargs)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return t[:, top:top + size, left:left + size]


def read_view(view: str, path: str | os.PathLike) -> np.ndarray:
    """Decode one view's file: RGB -> HxWx3 uint8, depth (16-bit PNG, mm) -> HxW uint16."""
    if VIEWS[view][0] == "rgb":
        return read_rgb(path)
    try:
        return read_depth(path)
    except ValueError as err:
        raise DatasetError(str(err)) from err


def shot_files(path: str | os.PathLike, views: list[str]) -> dict[str, Path]:
    """One shot's file per view: an episode folder's <view>.png for each of `views` (as `vlkd collect clutter`
    writes), or an image file as its base_rgb; FileNotFoundError naming what is missing."""
    path = Path(path)
    if path.is_dir():
        missing = [v for v in views if not (path / f"{v}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{path} has no {', '.join(f'{v}.png' for v in missing)} (the model "
                                    f"stacks {views})")
        return {v: path / f"{v}.png" for v in views}
    if not path.is_file():
        raise FileNotFoundError(f"shot {path} does not exist")
    return {"base_rgb": path}


def base_rgb_images(episodes: list[Episode]) -> ImageList:
    """The episodes' base RGB files as an ImageList (what the teacher encodes)."""
    return ImageList([ep.images["base_rgb"] for ep in episodes], [0] * len(episodes), ["observation"])


class EpisodeDataset(Dataset):
    """(stacked observation tensor, index) per episode."""

    def __init__(self, episodes: list[Episode], transform: ObservationTransform):
        self.episodes, self.transform = episodes, transform

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform.read(self.episodes[index]), index


def augment_observations(x: torch.Tensor, generator: torch.Generator, min_scale: float = 0.6,
                         masks: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per observation: random horizontal flip and random crop of `min_scale`..1 of the area resized back,
    applied alike to every stacked channel (B, C, S, S) and, nearest-neighbour, to the object masks (B, S, S)
    when given (then returns both)."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    out_masks = None if masks is None else torch.empty_like(masks)
    flips = torch.rand(b, generator=generator) < 0.5
    scales = min_scale + (1 - min_scale) * torch.rand(b, generator=generator)
    for i in range(b):
        xi = x[i].flip(-1) if flips[i] else x[i]
        ch, cw = max(1, round(h * float(scales[i]) ** 0.5)), max(1, round(w * float(scales[i]) ** 0.5))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        out[i] = F.interpolate(xi[None, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                               align_corners=False)[0]
        if out_masks is not None:
            mi = masks[i].flip(-1) if flips[i] else masks[i]
            out_masks[i] = F.interpolate(mi[None, None, top:top + ch, left:left + cw].float(), size=(h, w),
                                         mode="nearest")[0, 0].to(masks.dtype)
    return out if out_masks is None else (out, out_masks)


def jitter_brightness(x: torch.Tensor, generator: torch.Generator, gains: list[float] | tuple[float, float],
                      transform: ObservationTransform) -> torch.Tensor:
    """Observations (B, C, S, S) as `transform` made them, each one's RGB views scaled in pixel space by one gain
    drawn log-uniformly from `gains` (clipped to [0, 1]); depth channels unchanged. Gains [1, 1] return `x` itself
    and draw nothing from `generator` (so recipes without it augment as they did before it existed)."""
    if list(gains) == [1.0, 1.0]:
        return x
    lo, hi = math.log(gains[0]), math.log(gains[1])
    gain = torch.exp(lo + (hi - lo) * torch.rand(len(x), generator=generator)).view(-1, 1, 1, 1)
    out = x.clone()
    for start in rgb_offsets(transform.views):
        pixels = x[:, start:start + 3] * transform.std + transform.mean
        out[:, start:start + 3] = ((pixels * gain).clamp(0, 1) - transform.mean) / transform.std
    return out


def hue_matrix(angle: float, saturation: float) -> torch.Tensor:
    """The 3x3 RGB map that turns hues by `angle` radians about the grey axis and scales saturation (grey stays
    grey: brightness is kept)."""
    k = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    grey = torch.outer(k, k)
    turn = math.cos(angle) * torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * grey
    return (grey + saturation * (torch.eye(3) - grey)) @ turn


def recolor_observations(x: torch.Tensor, generator: torch.Generator, share: float,
                         transform: ObservationTransform) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations (B, C, S, S) as `transform` made them, a `share` of them with every RGB view's hues turned by
    30-330 degrees and saturation scaled by 0.6-1.5 (log-uniform), in pixel space and clipped to [0, 1]; returns
    them and which were recoloured (B,). Share 0 returns `x` itself and draws nothing from `generator`."""
    chosen = torch.zeros(len(x), dtype=torch.bool)
    if share <= 0:
        return x, chosen
    chosen = torch.rand(len(x), generator=generator) < share
    angles = math.radians(30) + math.radians(300) * torch.rand(len(x), generator=generator)
    saturations = torch.exp(math.log(0.6) + math.log(1.5 / 0.6) * torch.rand(len(x), generator=generator))
    out = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        m = hue_matrix(float(angles[i]), float(saturations[i]))
        for start in rgb_offsets(transform.views):
            pixels = x[i, start:start + 3] * transform.std + transform.mean
            turned = torch.einsum("ij,jhw->ihw", m, pixels).clamp(0, 1)
            out[i, start:start + 3] = (turned - transform.mean) / transform.std
    return out, chosen


class MaskedEpisodeDataset(EpisodeDataset):
    """(stacked observation, object mask (S, S) uint8 resized and cropped like the base view, index)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, _ = super().__getitem__(index)
        return x, read_mask(self.episodes[index], self.transform.image_size), index


def read_mask(episode: Episode, image_size: int) -> torch.Tensor:
    """An episode's object mask (S, S) uint8, resized (nearest) and centre-cropped as ObservationTransform does."""
    if episode.mask is None:
        raise DatasetError(f"episode {episode.id} has no {MASK_VIEW!r} mask; region distillation needs a dataset "
                           "collected with masks (vlkd collect clutter writes them)")
    mask = torch.from_numpy(read_label_png(episode.mask).astype(np.float32))[None]
    return resize_crop(mask, image_size, "nearest")[0].to(torch.uint8)


def stack_episodes(episodes: list[Episode], transform: ObservationTransform) -> torch.Tensor:
    """All episodes' observations as one (N, C, S, S) tensor."""
    if not episodes:
        return torch.zeros(0, transform.channels, transform.image_size, transform.image_size)
    return torch.stack([transform.read(ep) for ep in episodes])
