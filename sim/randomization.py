"""Domain randomisation as plain data: per-sample object variation, camera, lighting and backdrop drawn from a seeded
numpy generator (no simulator imports, so the draws are testable and recorded verbatim in the manifest)."""
from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Table-top textures (robosuite wheel, MIT licence); a backdrop uses one of these or a plain colour.
TABLE_TEXTURES = (
    "light-wood", "dark-wood", "blue-wood", "red-wood", "green-wood", "gray-woodgrain", "wood-tiles",
    "wood-varnished-panels", "light-gray-floor-tile", "gray-felt", "white-plaster", "gray-plaster",
    "cream-plaster", "pink-plaster", "yellow-plaster", "white-bricks", "clay", "dirt", "steel-brushed",
)
TEXTURE_URI = "pkg://robosuite/models/assets/textures/{}.png"


@dataclass(frozen=True)
class RandomizationConfig:
    """Ranges of the per-sample randomisation (angles in degrees, lengths in metres or multiples of object size)."""

    scale_range: tuple[float, float] = (0.85, 1.15)
    hue_jitter: float = 0.03
    brightness_range: tuple[float, float] = (0.8, 1.15)
    elevation_deg: tuple[float, float] = (30.0, 70.0)
    fov_deg: tuple[float, float] = (35.0, 50.0)
    framing: tuple[float, float] = (1.6, 2.6)
    target_jitter: float = 0.1
    ambient_range: tuple[float, float] = (0.15, 0.45)
    light_range: tuple[float, float] = (0.5, 1.3)
    light_tint: float = 0.15
    texture_probability: float = 0.6

    def validate(self) -> RandomizationConfig:
        """Raise ValueError naming the first range that is empty or out of its valid interval."""
        limits = {
            "scale_range": (0.05, 20.0), "brightness_range": (0.0, 3.0), "elevation_deg": (5.0, 89.0),
            "fov_deg": (5.0, 150.0), "framing": (0.5, 20.0), "ambient_range": (0.0, 2.0), "light_range": (0.0, 5.0),
        }
        for name, (lo_ok, hi_ok) in limits.items():
            lo, hi = getattr(self, name)
            if not lo_ok <= lo <= hi <= hi_ok:
                raise ValueError(f"randomization.{name} = {[lo, hi]} must satisfy {lo_ok} <= low <= high <= {hi_ok}")
        for name in ("hue_jitter", "target_jitter", "light_tint", "texture_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"randomization.{name} = {getattr(self, name)} must lie in [0, 1]")
        return self


@dataclass(frozen=True)
class Variation:
    """How one instance differs from its category's canonical look: size factor and colour changes."""

    scale: float = 1.0
    hue_shift: float = 0.0
    brightness: float = 1.0

    def color(self, rgba: tuple[float, float, float, float]) -> list[float]:
        """Apply the hue shift and brightness to an RGBA colour."""
        h, s, v = colorsys.rgb_to_hsv(*rgba[:3])
        r, g, b = colorsys.hsv_to_rgb((h + self.hue_shift) % 1.0, s, min(1.0, v * self.brightness))
        return [r, g, b, rgba[3]]


@dataclass(frozen=True)
class CameraPose:
    """A camera looking from `eye` at `target` (metres, world frame) with a vertical field of view in degrees."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float


@dataclass(frozen=True)
class Lighting:
    """Ambient light plus two directional lights (key and fill): directions point from the light into the scene."""

    ambient: tuple[float, float, float]
    key_direction: tuple[float, float, float]
    key_color: tuple[float, float, float]
    fill_direction: tuple[float, float, float]
    fill_color: tuple[float, float, float]


@dataclass(frozen=True)
class Backdrop:
    """The table top's look (a texture name from TABLE_TEXTURES or a plain colour) and the floor colour."""

    table_texture: str | None
    table_color: tuple[float, float, float]
    table_roughness: float
    floor_color: tuple[float, float, float]


@dataclass(frozen=True)
class SceneDraw:
    """Everything drawn for one sample; `as_dict()` is what the manifest records."""

    variation: Variation
    camera: CameraPose
    lighting: Lighting
    backdrop: Backdrop
    yaw_deg: float
    object_xy: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats rounded to 4 decimals)."""
        return rounded(asdict(self))


def sample_variation(rng: np.random.Generator, cfg: RandomizationConfig) -> Variation:
    """Draw a size factor, hue shift and brightness."""
    return Variation(float(rng.uniform(*cfg.scale_range)), float(rng.uniform(-cfg.hue_jitter, cfg.hue_jitter)),
                     float(rng.uniform(*cfg.brightness_range)))


def sample_camera(rng: np.random.Generator, cfg: RandomizationConfig, centre: np.ndarray, size: float) -> CameraPose:
    """A camera on a sphere around `centre` whose distance frames an object of largest extent `size`."""
    fov = float(rng.uniform(*cfg.fov_deg))
    elevation = math.radians(rng.uniform(*cfg.elevation_deg))
    azimuth = float(rng.uniform(0, 2 * math.pi))
    distance = size * float(rng.uniform(*cfg.framing)) / (2 * math.tan(math.radians(fov) / 2))
    distance = max(distance, 0.08)
    target = np.asarray(centre, dtype=float) + rng.uniform(-1, 1, 3) * cfg.target_jitter * size * np.array([1, 1, 0.5])
    eye = target + distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                        math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    return CameraPose(tuple(float(v) for v in eye), tuple(float(v) for v in target), fov)


def sample_lighting(rng: np.random.Generator, cfg: RandomizationConfig) -> Lighting:
    """Ambient level, a key light from above at a random azimuth and a weaker fill light."""
    def direction(elev_lo: float, elev_hi: float) -> tuple[float, float, float]:
        az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(elev_lo, elev_hi))
        return (-math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), -math.sin(el))

    def color(scale: float) -> tuple[float, float, float]:
        tint = 1 + rng.uniform(-cfg.light_tint, cfg.light_tint, 3)
        return tuple(float(c) for c in np.clip(scale * tint, 0, None))

    ambient = float(rng.uniform(*cfg.ambient_range))
    key = float(rng.uniform(*cfg.light_range))
    fill = key * rng.uniform(0.2, 0.5)
    return Lighting((ambient,) * 3, direction(35, 85), color(key), direction(10, 60), color(fill))


def sample_backdrop(rng: np.random.Generator, cfg: RandomizationConfig) -> Backdrop:
    """A textured or plain table top and a floor colour."""
    texture = str(rng.choice(TABLE_TEXTURES)) if rng.uniform() < cfg.texture_probability else None
    table_color = tuple(float(c) for c in rng.uniform(0.15, 0.95, 3))
    floor_color = tuple(float(c) for c in rng.uniform(0.05, 0.6, 3))
    return Backdrop(texture, table_color, float(rng.uniform(0.3, 1.0)), floor_color)


def rounded(value: Any) -> Any:
    """`value` (floats, dicts, lists, tuples) as JSON-ready data with floats rounded to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value
