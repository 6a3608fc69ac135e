"""Clutter scenes seen from several base-camera poses (real ManiSkill renders): one row per (scene, view) with the
scene's split, labels and masks measured per view, resume by scene, and the default view rendered as before."""
import json
import math
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch

from sim.collect_clutter import _make_env, _plan, collect_clutter, write_scenes
from sim.config import ClutterConfig, LightingConfig
from sim.randomization import CameraPose, rounded
from sim.shards import PARTS_DIR
from sim.viewpoints import scene_lighting, scene_views
from vlkd_formats.dataset_dir import read_manifest
from vlkd_formats.image_codec import read_depth, read_label_png, read_rgb

pytestmark = pytest.mark.sim
VIEWS = 3


def _config() -> ClutterConfig:
    return ClutterConfig(episodes=2, min_objects=3, max_objects=5, image_size=48, views_per_scene=VIEWS,
                         ood_episode_fraction=0.5, lighting=LightingConfig(random_lighting=True)).validate()


@pytest.fixture(scope="module")
def multiview(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "data"
    collect_clutter(_config(), out)
    return out


def test_rows_are_views_of_scenes_sharing_split_objects_and_hand_images(multiview):
    config = _config()
    plan = _plan(config)[3]
    rows = list(read_manifest(multiview))
    assert [r["index"] for r in rows] == [r["episode"] for r in rows] == list(range(2 * VIEWS))
    assert [(r["scene"], r["view"]) for r in rows] == [(s, v) for s in range(2) for v in range(VIEWS)]
    fractions_differ = False
    for s in range(2):
        views = rows[s * VIEWS:(s + 1) * VIEWS]
        episode = plan[s]
        poses, light = scene_views(config, episode), scene_lighting(config.lighting, episode)
        for v, row in enumerate(views):
            assert (row["split"], row["seed"]) == (episode.split, episode.seed)
            assert row["camera"] == rounded(asdict(poses[v])) and row["lighting"] == rounded(asdict(light))
            assert [o["name"] for o in row["objects"]] == list(episode.objects)
            assert [(o["present"], o["supports_other"]) for o in row["objects"]] == \
                [(o["present"], o["supports_other"]) for o in views[0]["objects"]]
        base = [read_rgb(multiview / r["images"]["base_rgb"]) for r in views]
        assert all(not np.array_equal(base[a], base[b]) for a in range(VIEWS) for b in range(a))
        hand = [read_rgb(multiview / r["images"]["hand_rgb"]) for r in views]
        assert all(np.array_equal(h, hand[0]) for h in hand)
        per_object = zip(*[[o["visible_fraction"] for o in r["objects"]] for r in views])
        fractions_differ |= any(len(set(f)) > 1 for f in per_object)
    assert fractions_differ, "visible fractions are measured per view"


def test_masks_and_boxes_match_the_labels(multiview):
    rows = list(read_manifest(multiview))
    for row in rows:
        objects = row["objects"]
        base = read_label_png(multiview / row["images"]["base_seg"])
        hand = read_label_png(multiview / row["images"]["hand_seg"])
        assert base.shape == hand.shape == (48, 48) and max(base.max(), hand.max()) <= len(objects)
        for k, obj in enumerate(objects, start=1):
            assert int((base == k).sum()) == obj["visible_pixels"]
            ys, xs = np.nonzero(base == k)
            assert obj["bbox"] == ([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None)
        depth = read_depth(multiview / row["images"]["base_depth"])
        assert (depth[base > 0] > 0).all()
    seen = [o["visible_pixels"] > 0 for r in rows for o in r["objects"]]
    assert np.mean(seen) >= 0.7 and all(any(o["visible_pixels"] for o in r["objects"]) for r in rows)


def test_a_scene_missing_some_views_is_rendered_again(multiview, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(multiview, out)
    (out / "manifest.jsonl").unlink()
    part = next((out / PARTS_DIR).glob("part-*.jsonl"))
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(line for line in lines if json.loads(line)["index"] < VIEWS + 1))  # scene 1: view 0 only
    shutil.rmtree(out / "episodes" / f"{VIEWS + 1:06d}")
    collect_clutter(_config(), out)
    assert list(read_manifest(out)) == list(read_manifest(multiview))
    row = list(read_manifest(out))[VIEWS + 1]
    for name in row["images"].values():
        assert (out / name).read_bytes() == (multiview / name).read_bytes()


def test_default_view_renders_as_the_fixed_camera_did_and_labels_see_through_the_hidden_robot(tmp_path):
    """The reset-time views path gives the old fixed base camera's frames; the object-only renders that leave the
    robot out (and put it back by depth) count the pixels that renders with the robot give."""
    from mani_skill.utils import sapien_utils

    from sim.envs import PICK_CLUTTER_ENV
    from sim.envs.clutter_labels import _hide, _render_bodies, _set_visibility, _unoccluded_pixels
    from sim.envs.make import make_env

    config = ClutterConfig(episodes=1, min_objects=6, max_objects=6, image_size=32).validate()
    scenes = write_scenes(config, tmp_path)
    episode = _plan(config)[3][0]
    pose = sapien_utils.look_at(torch.tensor(config.base_camera_eye), torch.tensor(config.base_camera_target))
    fixed = {"width": 32, "height": 32, "base_camera": {"pose": pose.raw_pose[0].tolist(),
                                                         "fov": math.radians(config.base_camera_fov_deg)}}
    env = make_env(PICK_CLUTTER_ENV, "cpu", obs_mode="rgb+depth+segmentation", episode_json=str(scenes),
                   sensor_configs=fixed)
    before = env.reset(seed=[episode.seed], options={"episode_idx": [0]})[0]["sensor_data"]["base_camera"]
    env.close()

    behind_robot = CameraPose((-1.1, 0.05, 0.5), (0.0, 0.0, 0.05), 55.0)
    env = _make_env(config, scenes)
    try:
        obs = env.reset(seed=[episode.seed], options={"episode_idx": [0], "reconfigure": True,
                                                      "base_views": [scene_views(config, episode) + [behind_robot]]})
        now = obs[0]["sensor_data"]["base_camera"]
        for key in ("rgb", "depth", "segmentation"):
            assert torch.equal(now[key], before[key]), key
        base = env.unwrapped
        cameras = ["base_camera", "base_camera_1"]
        objects = base.selectable_target_objects
        fast = _unoccluded_pixels(base, objects, cameras)
        with_robot = _pixels_shown_alone(base, objects, cameras, _hide)
        _set_visibility(_render_bodies(base.agent.robot.links), 0.0)
        without_robot = _pixels_shown_alone(base, objects, cameras, _hide)
        assert fast == with_robot
        assert without_robot["base_camera_1"] != with_robot["base_camera_1"], "the robot hides objects from behind"
    finally:
        env.close()


def _pixels_shown_alone(env, objects, cameras, hide) -> dict:
    """Reference counts: each object's pixels in a render of it alone (nothing else changed)."""
    counts = {c: [[0] * len(objects[0])] for c in cameras}
    for j, actor in enumerate(objects[0]):
        restore = hide(env, [a for k, a in enumerate(objects[0]) if k != j])
        env.scene.update_render(update_sensors=True, update_human_render_cameras=False)
        for c in cameras:
            env.scene.sensors[c].capture()
            seg = env.scene.sensors[c].get_obs(rgb=False, depth=False, position=False, segmentation=True)
            counts[c][0][j] = int((seg["segmentation"][0, ..., 0] == int(actor.per_scene_id[0])).sum())
        restore()
    return counts
