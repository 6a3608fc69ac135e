"""Base-camera views and lighting drawn per clutter scene, the shipped benchmark configs and the object split seed
(plain numpy and config checks, no rendering)."""
import math

import numpy as np
import pytest

from sim.clutter_episodes import WORK_AREA
from sim.collect_clutter import _plan
from sim.config import CameraPoseConfig, ClutterConfig, LightingConfig
from sim.plan import ClutterEpisode
from sim.viewpoints import default_view, scene_lighting, scene_views
from vlkd_formats.config import load_config

SHIPPED = ("clutter_train", "clutter_heldout", "clutter_shift")


def _episode(seed: int) -> ClutterEpisode:
    return ClutterEpisode(0, "train", ("apple",), seed)


def _angles(config: ClutterConfig, pose) -> tuple[float, float, float]:
    """(azimuth relative to the default eye's, elevation, distance / default distance) of a drawn pose, degrees."""
    default = default_view(config)
    d0 = np.subtract(default.eye, default.target)
    d = np.subtract(pose.eye, pose.target)
    azimuth = math.degrees(math.atan2(d[1], d[0]) - math.atan2(d0[1], d0[0]))
    azimuth = (azimuth + 180) % 360 - 180
    elevation = math.degrees(math.asin(d[2] / np.linalg.norm(d)))
    return azimuth, elevation, float(np.linalg.norm(d) / np.linalg.norm(d0))


def _sees(pose, points: np.ndarray) -> bool:
    """Whether a look-at pinhole camera (square image, vertical fov) has all `points` inside its image."""
    forward = np.subtract(pose.target, pose.eye)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = points - np.asarray(pose.eye)
    depth = rel @ forward
    half = math.tan(math.radians(pose.fov_deg) / 2)
    return bool((depth > 0).all() and (np.abs(rel @ right / depth) <= half).all()
                and (np.abs(rel @ up / depth) <= half).all())


def test_one_view_without_random_views_is_the_configured_camera():
    config = ClutterConfig().validate()
    assert not config.random_views
    assert scene_views(config, _episode(5)) == [default_view(config)]
    assert default_view(config).eye == (0.35, 0.3, 0.4) and default_view(config).fov_deg == 55.0
    assert scene_lighting(config.lighting, _episode(5)) is None


def test_views_are_drawn_per_scene_and_view_within_the_ranges():
    config = ClutterConfig(views_per_scene=4).validate()
    views = scene_views(config, _episode(7))
    assert len({v.eye for v in views}) == 4 and views == scene_views(config, _episode(7))
    assert scene_views(ClutterConfig(views_per_scene=2).validate(), _episode(7)) == views[:2]  # view v: (seed, v)
    assert scene_views(config, _episode(8))[0] != views[0]
    for seed in range(50):
        for pose in scene_views(config, _episode(seed)):
            azimuth, elevation, scale = _angles(config, pose)
            assert -60.5 <= azimuth <= 60.5 and 29.5 <= elevation <= 60.5 and 0.75 <= scale <= 1.25
            assert np.abs(np.subtract(pose.target, config.base_camera_target)).max() <= 0.02 + 1e-9
            assert pose.fov_deg == 55.0
    one = ClutterConfig(camera_poses=CameraPoseConfig(random_views=True)).validate()
    assert one.random_views and scene_views(one, _episode(7)) == views[:1]


def test_several_azimuth_ranges_are_all_used_and_nothing_between():
    config = ClutterConfig(views_per_scene=4, camera_poses=CameraPoseConfig(azimuth_deg=(60, 90, -90, -60))).validate()
    azimuths = [_angles(config, p)[0] for s in range(40) for p in scene_views(config, _episode(s))]
    assert all(59.5 <= abs(a) <= 90.5 for a in azimuths)
    assert min(azimuths) < -60 and max(azimuths) > 60


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_views_see_the_work_area(name):
    """Every drawn base camera of a shipped config has the work area (table top to 10 cm up) in its image."""
    config = load_config(ClutterConfig, name)
    (x_lo, x_hi), (y_lo, y_hi) = WORK_AREA
    corners = np.array([[x, y, z] for x in (x_lo, x_hi) for y in (y_lo, y_hi) for z in (0.0, 0.1)])
    poses = [p for s in range(100) for p in scene_views(config, _episode(s))]
    assert np.mean([_sees(p, corners) for p in poses]) >= 0.95
    assert all(p.eye[2] > 0.05 for p in poses)


def test_lighting_is_drawn_per_scene_within_the_ranges():
    config = LightingConfig(random_lighting=True, light_intensity=(0.2, 0.3), ambient=(0.05, 0.1), light_tint=0.0)
    light = scene_lighting(config, _episode(3))
    assert light == scene_lighting(config, _episode(3)) and light != scene_lighting(config, _episode(4))
    assert 0.05 <= light.ambient[0] <= 0.1 and 0.2 <= light.key_color[0] <= 0.3
    assert light.key_direction[2] < 0  # from above


def test_shipped_benchmarks_use_poses_and_lights_training_does_not():
    train, heldout, shift = (load_config(ClutterConfig, n) for n in SHIPPED)
    assert train.views_per_scene == 4 and train.image_size == 128 and train.seed == 0
    assert heldout.image_size == shift.image_size == train.image_size  # the benchmarks at the size the model sees
    assert tuple(train.camera_poses.azimuth_deg) == (-60, 60)
    lo, hi = train.camera_poses.azimuth_deg
    pairs = list(zip(heldout.camera_poses.azimuth_deg[::2], heldout.camera_poses.azimuth_deg[1::2]))
    assert all(b <= lo or a >= hi for a, b in pairs)
    assert shift.camera_poses.elevation_deg[1] < train.camera_poses.elevation_deg[0]
    assert shift.lighting.light_intensity[1] < train.lighting.light_intensity[0]
    assert shift.lighting.ambient[1] < train.lighting.ambient[0]


@pytest.mark.parametrize("name", SHIPPED[1:])
def test_benchmarks_keep_the_training_split_and_hold_enough_frames(name):
    """New scenes (another seed), the training set's ID/OOD split, >= 300 X_id and >= 300 X_ood frames."""
    train, bench = load_config(ClutterConfig, "clutter_train"), load_config(ClutterConfig, name)
    _, _, train_split, train_plan = _plan(train)
    _, _, split, plan = _plan(bench)
    assert bench.seed != train.seed and split == train_split
    assert [e.objects for e in plan[:20]] != [e.objects for e in train_plan[:20]]
    ood = set(split["ood"])
    x_ood = [e for e in plan if e.split == "val"]
    assert all(any(o in ood for o in e.objects) for e in x_ood)
    assert all(not any(o in ood for o in e.objects) for e in plan if e.split != "val")
    assert len(x_ood) * bench.views_per_scene >= 300 and (len(plan) - len(x_ood)) * bench.views_per_scene >= 300


def test_split_seed_keeps_the_object_split_when_the_seed_changes():
    base = _plan(ClutterConfig(seed=0).validate())[2]
    assert _plan(ClutterConfig(seed=5).validate())[2] != base
    assert _plan(ClutterConfig(seed=5, split_seed=0).validate())[2] == base
