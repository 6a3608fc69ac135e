"""Typed, validated collector configs: defaults that run, a YAML file on top, command-line flags on top of that.

Loaded like every job config by `vlkd_formats.config.load_config` (`vlkd collect` maps its flags onto these fields
with `vlkd_ros.cli.flags`); the `help` metadata of a field is its flag's help text.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sim.backend import SIM_BACKENDS
from sim.randomization import RandomizationConfig

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
SPLIT_MODES = ("random", "none")
MAX_VIEWS = 64
C = TypeVar("C", bound="CollectConfig")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class CollectConfig:
    """Settings shared by both collectors."""

    objects: str = field(default="offline", metadata=_help(
        "object set: offline, ycb, a YAML file, or several joined by commas"))
    # a list, or one comma-separated string ("apple, banana"; a YAML file or --labels may give either)
    labels: list[str] | str | None = field(default=None, metadata=_help(
        "only these categories, comma-separated (default: the whole set)"))
    image_size: int = field(default=128, metadata=_help("square image size in pixels"))
    split: str = field(default="random", metadata=_help(
        "random (seeded ID/OOD), none (all ID, all in train/), or a YAML/JSON file with id: and ood: lists"))
    ood_fraction: float = field(default=0.5, metadata=_help("share of categories held out as OOD"))
    val_fraction: float = field(default=0.2, metadata=_help("share of ID data held out in val_on_train"))
    seed: int = field(default=0, metadata=_help("collection seed"))
    workers: int = field(default=1, metadata=_help("parallel worker processes"))
    sim_backend: str = field(default="cpu", metadata=_help(
        "cpu or gpu: ManiSkill GPU-parallel scenes, needs CUDA"))
    num_envs: int = field(default=8, metadata=_help("parallel scenes per batch with --sim-backend gpu"))
    montage_size: int = 48

    def __post_init__(self) -> None:
        if isinstance(self.labels, str):
            self.labels = [n.strip() for n in self.labels.split(",") if n.strip()]

    def validate(self: C) -> C:
        """Raise ValueError naming the first bad value and what would be valid; return self."""
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size {self.image_size} px is impossible for the cameras; use "
                             f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")
        if self.split not in SPLIT_MODES and Path(self.split).suffix.lower() not in (".yaml", ".yml", ".json"):
            raise ValueError(f"split {self.split!r} must be one of {', '.join(SPLIT_MODES)} or a YAML/JSON file "
                             "with `id:` and `ood:` label lists")
        if not 0.0 < self.ood_fraction < 1.0:
            raise ValueError(f"ood_fraction {self.ood_fraction} must lie strictly between 0 and 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction {self.val_fraction} must lie in [0, 1)")
        if self.workers < 1:
            raise ValueError(f"workers {self.workers} must be at least 1")
        if self.sim_backend not in SIM_BACKENDS:
            raise ValueError(f"sim_backend {self.sim_backend!r} must be one of {', '.join(SIM_BACKENDS)}")
        if self.num_envs < 1:
            raise ValueError(f"num_envs {self.num_envs} must be at least 1 (parallel scenes per GPU batch)")
        if self.labels is not None and not self.labels:
            raise ValueError("labels is an empty list: zero objects to collect; omit it to use the whole object set")
        if self.montage_size < 1:
            raise ValueError(f"montage_size {self.montage_size} must be at least 1")
        return self

    def settings(self) -> dict[str, Any]:
        """Everything that determines the data (not how fast it is made); stored in dataset.json."""
        data = asdict(self)
        for speed_only in ("workers", "num_envs"):
            data.pop(speed_only)
        return data


@dataclass
class ClassificationConfig(CollectConfig):
    """`vlkd collect classification`: one object per image, `per_class` images per category."""

    per_class: int = field(default=20, metadata=_help("images per category"))
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)

    def validate(self) -> ClassificationConfig:
        """Also check the count and the randomisation ranges."""
        super().validate()
        if self.per_class < 1:
            raise ValueError(f"per_class {self.per_class} must be at least 1 image per category")
        self.randomization.validate()
        return self


@dataclass(frozen=True)
class CameraPoseConfig:
    """Where a clutter scene's base cameras stand: on a shell around `base_camera_target`, angles relative to the
    default eye (`base_camera_eye`), distance as a multiple of the default eye's distance."""

    random_views: bool = field(default=False, metadata=_help(
        "draw base-camera poses even with one view per scene (they are always drawn with views_per_scene > 1)"))
    azimuth_deg: tuple[float, ...] = field(default=(-60.0, 60.0), metadata=_help(
        "base-camera azimuth ranges in degrees around the default eye's azimuth, as low high pairs "
        "(e.g. 60 90 -90 -60: two ranges)"))
    elevation_deg: tuple[float, float] = field(default=(30.0, 60.0), metadata=_help(
        "base-camera elevation range in degrees above the table plane"))
    distance_scale: tuple[float, float] = field(default=(0.8, 1.2), metadata=_help(
        "base-camera distance range as multiples of the default eye's distance to the target"))
    target_jitter: float = field(default=0.02, metadata=_help(
        "base-camera look-at target jitter in metres (half that vertically)"))

    def validate(self) -> CameraPoseConfig:
        """Raise ValueError naming the first empty or out-of-bounds range; return self."""
        pairs = self.azimuth_deg
        if len(pairs) < 2 or len(pairs) % 2:
            raise ValueError(f"camera_poses.azimuth_deg {list(pairs)} must be low high pairs (an even count >= 2)")
        for lo, hi in zip(pairs[::2], pairs[1::2]):
            if not -180.0 <= lo <= hi <= 180.0:
                raise ValueError(f"camera_poses.azimuth_deg range {[lo, hi]} must satisfy -180 <= low <= high <= 180")
        for name, (lo_ok, hi_ok) in (("elevation_deg", (5.0, 85.0)), ("distance_scale", (0.3, 3.0))):
            lo, hi = getattr(self, name)
            if not lo_ok <= lo <= hi <= hi_ok:
                raise ValueError(f"camera_poses.{name} {[lo, hi]} must satisfy {lo_ok} <= low <= high <= {hi_ok}")
        if not 0.0 <= self.target_jitter <= 0.1:
            raise ValueError(f"camera_poses.target_jitter {self.target_jitter} m must lie in [0, 0.1] (the camera "
                             "must keep looking at the work area)")
        return self


@dataclass(frozen=True)
class LightingConfig:
    """Per-scene lighting of a clutter scene (off: ManiSkill's default lights): ambient level, a key light from a
    random direction and a weaker fill light (sim.randomization.sample_lighting)."""

    random_lighting: bool = field(default=False, metadata=_help("draw each scene's lights from its seed"))
    light_intensity: tuple[float, float] = field(default=(0.6, 1.4), metadata=_help(
        "key light intensity range (ManiSkill's default lights: 1)"))
    ambient: tuple[float, float] = field(default=(0.2, 0.4), metadata=_help(
        "ambient light range (ManiSkill's default: 0.3)"))
    light_tint: float = field(default=0.1, metadata=_help("per-channel light colour jitter"))

    def validate(self) -> LightingConfig:
        """Raise ValueError naming the first empty or out-of-bounds range; return self."""
        for name, hi_ok in (("light_intensity", 5.0), ("ambient", 2.0)):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= hi_ok:
                raise ValueError(f"lighting.{name} {[lo, hi]} must satisfy 0 <= low <= high <= {hi_ok}")
        if not 0.0 <= self.light_tint <= 1.0:
            raise ValueError(f"lighting.light_tint {self.light_tint} must lie in [0, 1]")
        return self


@dataclass
class ClutterConfig(CollectConfig):
    """`vlkd collect clutter`: `episodes` table scenes of `min_objects`..`max_objects` dropped objects."""

    episodes: int = field(default=50, metadata=_help("number of scenes"))
    min_objects: int = field(default=3, metadata=_help("fewest objects per scene"))
    max_objects: int = field(default=8, metadata=_help("most objects per scene"))
    ood_episode_fraction: float = field(default=0.3, metadata=_help(
        "share of scenes holding an OOD object (split val)"))
    visible_threshold: float = field(default=0.3, metadata=_help(
        "visible fraction an object needs to count as graspable"))
    settle_steps: int = 200
    base_camera_eye: list[float] = field(default_factory=lambda: [0.35, 0.3, 0.4])
    base_camera_target: list[float] = field(default_factory=lambda: [-0.02, 0.0, 0.02])
    base_camera_fov_deg: float = 55.0
    views_per_scene: int = field(default=1, metadata=_help(
        "base-camera poses each settled scene is rendered from (each view is its own manifest row)"))
    camera_poses: CameraPoseConfig = field(default_factory=CameraPoseConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    split_seed: int | None = field(default=None, metadata=_help(
        "seed of the ID/OOD object split (default: seed), so other scenes can keep a training set's split"))

    @property
    def random_views(self) -> bool:
        """Whether base-camera poses are drawn per (scene, view) rather than fixed at base_camera_eye."""
        return self.views_per_scene > 1 or self.camera_poses.random_views

    def validate(self) -> ClutterConfig:
        """Also check the episode count, objects per scene and the graspability threshold."""
        super().validate()
        if self.episodes < 1:
            raise ValueError(f"episodes {self.episodes} must be at least 1")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"objects per scene {self.min_objects}..{self.max_objects}: need 1 <= min_objects <= "
                             "max_objects (zero objects make no scene)")
        if self.max_objects > 12:
            raise ValueError(f"max_objects {self.max_objects} is more than the 12 a table scene holds")
        if not 0.0 <= self.ood_episode_fraction < 1.0:
            raise ValueError(f"ood_episode_fraction {self.ood_episode_fraction} must lie in [0, 1)")
        if not 0.0 < self.visible_threshold <= 1.0:
            raise ValueError(f"visible_threshold {self.visible_threshold} must lie in (0, 1]")
        if self.settle_steps < 0:
            raise ValueError(f"settle_steps {self.settle_steps} must be >= 0")
        if not 1 <= self.views_per_scene <= MAX_VIEWS:
            raise ValueError(f"views_per_scene {self.views_per_scene} must lie in 1..{MAX_VIEWS}")
        self._check_camera()
        self.camera_poses.validate()
        self.lighting.validate()
        return self

    def _check_camera(self) -> None:
        eye, target = self.base_camera_eye, self.base_camera_target
        for name, vec in (("base_camera_eye", eye), ("base_camera_target", target)):
            if not isinstance(vec, (list, tuple)) or len(vec) != 3 or not all(isinstance(v, (int, float)) for v in vec):
                raise ValueError(f"{name} {vec!r} must be three numbers (x, y, z in metres)")
        if sum((a - b) ** 2 for a, b in zip(eye, target)) ** 0.5 < 0.05:
            raise ValueError(f"base camera eye {list(eye)} and target {list(target)} are less than 5 cm apart: "
                             "the camera has no viewing direction")
        if abs(eye[0] - target[0]) + abs(eye[1] - target[1]) < 0.01:
            raise ValueError(f"base camera eye {list(eye)} is straight above target {list(target)}; move it at least "
                             "1 cm sideways (the look-at pose needs a horizontal viewing component)")
        if eye[2] <= 0.0:
            raise ValueError(f"base_camera_eye z = {eye[2]} puts the camera at or below the table top (z = 0)")
        if not 10.0 <= self.base_camera_fov_deg <= 150.0:
            raise ValueError(f"base_camera_fov_deg {self.base_camera_fov_deg} must lie in 10..150 degrees")
        if self.random_views:
            poses = self.camera_poses
            distance = sum((a - b) ** 2 for a, b in zip(eye, target)) ** 0.5
            lowest = target[2] - poses.target_jitter / 2 + distance * poses.distance_scale[0] * \
                math.sin(math.radians(poses.elevation_deg[0]))
            if lowest <= 0.0:
                raise ValueError(f"camera_poses put the base camera at z = {lowest:.3f} m, at or below the table top; "
                                 "raise elevation_deg or distance_scale, or the target")
