"""Randomisation draws: deterministic for a seed, inside their ranges, recorded as plain JSON."""
import json

import numpy as np

from sim.randomization import (
    RandomizationConfig,
    SceneDraw,
    Variation,
    sample_backdrop,
    sample_camera,
    sample_lighting,
    sample_variation,
)


def _draw(seed: int) -> SceneDraw:
    rng, cfg = np.random.default_rng(seed), RandomizationConfig()
    return SceneDraw(sample_variation(rng, cfg), sample_camera(rng, cfg, np.zeros(3), 0.1), sample_lighting(rng, cfg),
                     sample_backdrop(rng, cfg), 10.0, (0.0, 0.0))


def test_same_seed_same_draw_and_json_ready():
    assert _draw(5) == _draw(5) and _draw(5) != _draw(6)
    json.dumps(_draw(5).as_dict())


def test_camera_looks_down_from_the_configured_elevation():
    cfg = RandomizationConfig()
    for seed in range(50):
        cam = sample_camera(np.random.default_rng(seed), cfg, np.array([0, 0, 0.05]), 0.1)
        view = np.asarray(cam.target) - np.asarray(cam.eye)
        elevation = np.degrees(np.arcsin(-view[2] / np.linalg.norm(view)))
        assert cfg.elevation_deg[0] - 1 <= elevation <= cfg.elevation_deg[1] + 1
        assert cfg.fov_deg[0] <= cam.fov_deg <= cfg.fov_deg[1]


def test_variation_keeps_colours_valid():
    colour = Variation(1.0, 0.5, 3.0).color((0.9, 0.2, 0.1, 1.0))
    assert all(0.0 <= c <= 1.0 for c in colour) and colour[3] == 1.0
