"""The teachers' training data never holds an evaluation sample: scene and render seeds disjoint from every evaluation
set, base-camera poses and lights inside the training ranges (checked from the configs, nothing rendered)."""
from pathlib import Path

import pytest

from sim.catalog import load_object_set
from sim.config import ClassificationConfig, ClutterConfig
from sim.plan import classification_plan, clutter_plan
from sim.randomization import RandomizationConfig
from training.pretrain_teacher import PretrainConfig
from vlkd_formats.config import load_config
from vlkd_ros.pipeline import MiniWorldConfig

PRETRAIN_CONFIGS = sorted((Path(__file__).parents[2] / "training" / "configs").glob("pretrain_teacher*.yaml"))
BENCHMARKS = ("clutter_heldout", "clutter_shift")


def _labels(objects: str) -> list[str]:
    return list(load_object_set(objects).names)


def clutter_seeds(config: ClutterConfig) -> set[int]:
    """The episode seeds of a clutter collection, from its plan (every scene, whatever its split)."""
    labels = _labels(config.objects)
    plan = clutter_plan({"id": labels, "ood": []}, config.episodes, config.min_objects, config.max_objects, 0.0,
                        config.val_fraction, config.seed)
    return {e.seed for e in plan}


def classification_seeds(config: ClassificationConfig) -> set[int]:
    """The sample seeds of a classification collection, from its plan (every split)."""
    labels = _labels(config.objects)
    plan = classification_plan({"id": labels, "ood": []}, labels, config.per_class, config.val_fraction, config.seed)
    return {s.seed for s in plan}


def evaluation_seeds() -> set[int]:
    """Every seed an evaluation set is rendered from: the benchmarks' scenes, and the demo's classification renders
    and clutter scenes (full and --quick)."""
    seeds = set().union(*(clutter_seeds(load_config(ClutterConfig, name)) for name in BENCHMARKS))
    for mini in (MiniWorldConfig(), MiniWorldConfig().quick()):
        seeds |= classification_seeds(ClassificationConfig(objects="offline", per_class=mini.per_class,
                                                           seed=mini.seed))
        seeds |= clutter_seeds(ClutterConfig(objects="offline", episodes=mini.clutter_episodes, seed=mini.seed))
    return seeds


def _inside(ranges: tuple[float, ...], allowed: tuple[float, ...]) -> bool:
    """Every low-high pair of `ranges` lies within one pair of `allowed`."""
    pairs = list(zip(allowed[::2], allowed[1::2]))
    return all(any(a <= lo and hi <= b for a, b in pairs) for lo, hi in zip(ranges[::2], ranges[1::2]))


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Some pair of `a` and some pair of `b` share more than a boundary point."""
    return any(lo < b_hi and b_lo < hi for lo, hi in zip(a[::2], a[1::2]) for b_lo, b_hi in zip(b[::2], b[1::2]))


@pytest.fixture(scope="module")
def eval_seeds() -> set[int]:
    return evaluation_seeds()


@pytest.mark.parametrize("path", PRETRAIN_CONFIGS, ids=lambda p: p.stem)
def test_a_teachers_data_shares_no_seed_with_an_evaluation_set(path, eval_seeds):
    config = load_config(PretrainConfig, str(path))
    assert config.renders_collect, f"{path.name} must name the collection config of its renders"
    seeds = classification_seeds(load_config(ClassificationConfig, config.renders_collect))
    if config.clutter_root:
        assert config.clutter_collect, f"{path.name} must name the collection config of its scenes"
        scenes = load_config(ClutterConfig, config.clutter_collect)
        assert scenes.split == "none"  # every category in the teacher's scenes, as CLIP has seen them all
        seeds |= clutter_seeds(scenes)
    assert len(seeds) > 1000 and not seeds & eval_seeds


@pytest.mark.parametrize("path", [p for p in PRETRAIN_CONFIGS if load_config(PretrainConfig, str(p)).clutter_collect],
                         ids=lambda p: p.stem)
def test_a_teachers_scenes_are_seen_from_training_poses_under_training_lights(path):
    scenes = load_config(ClutterConfig, load_config(PretrainConfig, str(path)).clutter_collect)
    train = load_config(ClutterConfig, "clutter_train")
    poses, allowed = scenes.camera_poses, train.camera_poses
    assert _inside(poses.azimuth_deg, allowed.azimuth_deg) and _inside(poses.elevation_deg, allowed.elevation_deg)
    assert _inside(poses.distance_scale, allowed.distance_scale) and poses.target_jitter <= allowed.target_jitter
    assert scenes.lighting.random_lighting == train.lighting.random_lighting
    assert _inside(scenes.lighting.light_intensity, train.lighting.light_intensity)
    assert _inside(scenes.lighting.ambient, train.lighting.ambient)
    assert scenes.base_camera_eye == train.base_camera_eye and scenes.base_camera_fov_deg == train.base_camera_fov_deg
    for name in BENCHMARKS:  # what each benchmark shifts, the teacher never sees
        bench = load_config(ClutterConfig, name)
        shifted = [k for k in ("azimuth_deg", "elevation_deg") if not _inside(getattr(bench.camera_poses, k),
                                                                             getattr(allowed, k))]
        assert shifted, f"{name} shifts no camera range"
        for key in shifted:
            assert not _overlap(getattr(poses, key), getattr(bench.camera_poses, key)), (name, key)


@pytest.mark.parametrize("path", PRETRAIN_CONFIGS, ids=lambda p: p.stem)
def test_a_teachers_renders_keep_the_classification_renders_camera_and_light_ranges(path):
    renders = load_config(ClassificationConfig, load_config(PretrainConfig, str(path)).renders_collect)
    wide, default = renders.randomization, RandomizationConfig()
    assert renders.split == "none"
    for key in ("elevation_deg", "fov_deg", "ambient_range", "light_range"):
        assert _inside(getattr(wide, key), getattr(default, key)), key


def test_the_seed_check_would_catch_the_old_scene_recipe(eval_seeds):
    old = ClutterConfig(objects="offline", split="none", episodes=1500, image_size=64, seed=1000)
    assert clutter_seeds(old) & eval_seeds  # seed 1000 rendered clutter_heldout's scenes
