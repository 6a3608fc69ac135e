"""Per-scene base-camera poses and lighting of a clutter collection, drawn from the scene's seed (plain numpy, so the
draws are testable and recorded verbatim in the manifest).

View v of a scene is drawn from (scene seed, v) alone: a scene's first views are the same whatever views_per_scene.
"""
from __future__ import annotations

import math

import numpy as np

from sim.config import CameraPoseConfig, ClutterConfig, LightingConfig
from sim.plan import ClutterEpisode
from sim.randomization import CameraPose, Lighting, RandomizationConfig, sample_lighting

VIEW_SALT = 0x5EE5
LIGHT_SALT = 0x7167


def default_view(config: ClutterConfig) -> CameraPose:
    """The configured base camera (`base_camera_eye`, `base_camera_target`, `base_camera_fov_deg`)."""
    return CameraPose(tuple(map(float, config.base_camera_eye)), tuple(map(float, config.base_camera_target)),
                      float(config.base_camera_fov_deg))


def scene_views(config: ClutterConfig, episode: ClutterEpisode) -> list[CameraPose]:
    """The `views_per_scene` base-camera poses of a scene: drawn (see `sample_view`) or, without random views, the
    configured camera."""
    default = default_view(config)
    if not config.random_views:
        return [default] * config.views_per_scene
    return [sample_view(config.camera_poses, default, episode.seed, v) for v in range(config.views_per_scene)]


def sample_view(poses: CameraPoseConfig, default: CameraPose, seed: int, view: int) -> CameraPose:
    """A camera on a shell around `default.target` (jittered): azimuth and elevation in the configured ranges
    (azimuth relative to the default eye's), distance a multiple of the default eye's."""
    rng = np.random.default_rng([seed, VIEW_SALT, view])
    eye, target = np.asarray(default.eye, dtype=float), np.asarray(default.target, dtype=float)
    offset = eye - target
    azimuth = math.atan2(offset[1], offset[0]) + math.radians(_in_ranges(poses.azimuth_deg, rng.uniform()))
    elevation = math.radians(rng.uniform(*poses.elevation_deg))
    distance = float(np.linalg.norm(offset)) * rng.uniform(*poses.distance_scale)
    target = target + rng.uniform(-1, 1, 3) * poses.target_jitter * np.array([1.0, 1.0, 0.5])
    eye = target + distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                        math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    return CameraPose(tuple(float(v) for v in eye), tuple(float(v) for v in target), default.fov_deg)


def scene_lighting(config: LightingConfig, episode: ClutterEpisode) -> Lighting | None:
    """The scene's lights drawn from its seed; None (ManiSkill's default lights) unless `random_lighting`."""
    if not config.random_lighting:
        return None
    ranges = RandomizationConfig(ambient_range=config.ambient, light_range=config.light_intensity,
                                 light_tint=config.light_tint)
    return sample_lighting(np.random.default_rng([episode.seed, LIGHT_SALT]), ranges)


def _in_ranges(pairs: tuple[float, ...], u: float) -> float:
    """The point at fraction `u` of the union of [low, high] ranges given as flat pairs (by length)."""
    ranges = list(zip(pairs[::2], pairs[1::2]))
    total = sum(hi - lo for lo, hi in ranges)
    if total <= 0:
        return float(ranges[0][0])
    at = u * total
    for lo, hi in ranges:
        if at <= hi - lo:
            return float(lo + at)
        at -= hi - lo
    return float(ranges[-1][1])
