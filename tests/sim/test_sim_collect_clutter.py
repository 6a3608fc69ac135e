"""Clutter collection rendering real frames: RGB-D files, per-object labels, the graspable rule, the gym env."""
import cv2
import gymnasium as gym
import numpy as np
import pytest

from sim.collect_clutter import collect_clutter
from sim.config import ClutterConfig
from vlkd_formats.dataset_dir import read_dataset_info, read_manifest
from vlkd_formats.image_codec import read_depth, read_label_png, read_rgb

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("clutter") / "data"
    config = ClutterConfig(episodes=3, min_objects=3, max_objects=4, image_size=64,
                           ood_episode_fraction=0.5).validate()
    collect_clutter(config, out)
    return out


def test_files_labels_and_rule(dataset):
    info = read_dataset_info(dataset)
    assert info.kind == "clutter" and len(info.labels) == 40 and "graspable" in info.settings["graspable_rule"]
    rows = list(read_manifest(dataset))
    assert [r["episode"] for r in rows] == [r["scene"] for r in rows] == [0, 1, 2]
    camera = {"eye": [0.35, 0.3, 0.4], "target": [-0.02, 0.0, 0.02], "fov_deg": 55.0}  # one view: the fixed camera
    assert all(r["view"] == 0 and r["camera"] == camera and "lighting" not in r for r in rows)
    ood = set(info.split["ood"])
    for row in rows:
        names = [o["name"] for o in row["objects"]]
        assert 3 <= len(names) <= 4 and set(names) <= set(info.labels)
        assert (row["split"] == "val") == any(n in ood for n in names)
        for obj in row["objects"]:
            assert 0.0 <= obj["visible_fraction"] <= 1.0
            expected = obj["present"] and obj["visible_fraction"] >= 0.3 and not obj["supports_other"]
            assert obj["graspable"] == expected
        mask = read_label_png(dataset / row["images"]["base_seg"])
        counts = [int((mask == k).sum()) for k in range(1, len(names) + 1)]
        assert counts == [o["visible_pixels"] for o in row["objects"]]
        for view in ("base", "hand"):
            rgb = read_rgb(dataset / row["images"][f"{view}_rgb"])
            depth = read_depth(dataset / row["images"][f"{view}_depth"])
            assert rgb.shape == (64, 64, 3) and depth.shape == (64, 64)
            # pixel-exact with the OpenCV decode sim/ used before the one codec
            bgr = cv2.imread(str(dataset / row["images"][f"{view}_rgb"]), cv2.IMREAD_COLOR)
            raw_depth = cv2.imread(str(dataset / row["images"][f"{view}_depth"]), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) and np.array_equal(depth, raw_depth)
            assert 100 < np.median(depth) < 3000
    assert "Graspable rule" in (dataset / "CARD.md").read_text() and (dataset / "scenes.json").is_file()


def test_training_module_reads_it(dataset):
    grasp = pytest.importorskip("training.grasp.data")
    data = grasp.load_clutter_data(grasp.GraspDataConfig(root=str(dataset)))
    assert len(data.train) + len(data.x_id) + len(data.x_ood) == 3


def test_object_lying_on_another_is_graspable_the_lower_one_not(tmp_path):
    from sim.clutter_episodes import write_episodes
    from sim.envs import PICK_CLUTTER_ENV
    from sim.envs.clutter_labels import scene_labels

    actors = [{"model_id": "hardcover_book", "pose": [0.0, 0.0, 0.001, 1, 0, 0, 0], "rep_pts": []},
              {"model_id": "dice", "pose": [0.0, 0.0, 0.035, 1, 0, 0, 0], "rep_pts": []},
              {"model_id": "golf_ball", "pose": [0.0, 0.12, 0.03, 1, 0, 0, 0], "rep_pts": []}]
    path = write_episodes(tmp_path / "e.json", [{"actors": actors}])
    env = gym.make(PICK_CLUTTER_ENV, obs_mode="rgb+depth+segmentation", episode_json=str(path),
                   sim_backend="physx_cpu", render_backend="cpu", sensor_configs={"width": 96, "height": 96})
    obs, _ = env.reset(seed=0)
    assert set(obs["sensor_data"]) == {"base_camera", "hand_camera"}
    labels = scene_labels(env.unwrapped, [["hardcover book", "dice", "golf ball"]],
                          {"base_camera": obs["sensor_data"]["base_camera"]["segmentation"]}, threshold=0.3)
    labels = labels["base_camera"][0]
    book, dice, ball = labels
    assert book["supports_other"] and not book["graspable"] and book["present"]
    assert dice["graspable"] and not dice["supports_other"]
    assert ball["present"] and not ball["supports_other"]
    env.close()
