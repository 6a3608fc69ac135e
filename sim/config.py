"""Typed, validated collector configs: defaults that run, a YAML file on top, command-line flags on top of that."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sim.backend import SIM_BACKENDS
from sim.randomization import RandomizationConfig

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
SPLIT_MODES = ("random", "none")
C = TypeVar("C", bound="CollectConfig")


@dataclass
class CollectConfig:
    """Settings shared by both collectors."""

    objects: str = "offline"
    labels: list[str] | None = None
    image_size: int = 128
    split: str = "random"
    ood_fraction: float = 0.5
    val_fraction: float = 0.2
    seed: int = 0
    workers: int = 1
    sim_backend: str = "cpu"
    num_envs: int = 8
    montage_size: int = 48

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

    per_class: int = 20
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)

    def validate(self) -> ClassificationConfig:
        """Also check the count and the randomisation ranges."""
        super().validate()
        if self.per_class < 1:
            raise ValueError(f"per_class {self.per_class} must be at least 1 image per category")
        self.randomization.validate()
        return self


@dataclass
class ClutterConfig(CollectConfig):
    """`vlkd collect clutter`: `episodes` table scenes of `min_objects`..`max_objects` dropped objects."""

    episodes: int = 50
    min_objects: int = 3
    max_objects: int = 8
    ood_episode_fraction: float = 0.3
    visible_threshold: float = 0.3
    settle_steps: int = 200
    base_camera_eye: list[float] = field(default_factory=lambda: [0.35, 0.3, 0.4])
    base_camera_target: list[float] = field(default_factory=lambda: [-0.02, 0.0, 0.02])
    base_camera_fov_deg: float = 55.0

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
        self._check_camera()
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


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build `cls` from its defaults, then the YAML file at `path`, then the non-None `overrides`; validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    if "randomization" in values and isinstance(values["randomization"], dict):
        values["randomization"] = _randomization(values["randomization"])
    return cls(**_coerced(cls, values)).validate()


def _coerced(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Convert values to the type of each field's default (int, float, str); ValueError naming a bad one."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    out = dict(values)
    for name, value in values.items():
        kind = type(defaults.get(name))
        if kind in (int, float, str) and not isinstance(value, bool):
            try:
                out[name] = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"setting {name} = {value!r} is not a valid {kind.__name__}") from None
            if kind is int and isinstance(value, float) and value != int(value):
                raise ValueError(f"setting {name} = {value!r} must be a whole number")
    if isinstance(out.get("labels"), str):
        out["labels"] = [n.strip() for n in out["labels"].split(",") if n.strip()]
    return out


def _randomization(raw: dict[str, Any]) -> RandomizationConfig:
    valid = {f.name for f in dataclasses.fields(RandomizationConfig)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ValueError(f"unknown randomization setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return RandomizationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
