"""Clutter datasets: episodes and labels through the dataset-dir loader, the ID/OOD object split, the transform."""
import numpy as np
import pytest
import torch

from grasp_fixtures import ID_OBJECTS, OOD_OBJECTS
from training.data import DatasetError
from sim.ycb import paper_split
from training.grasp.data import (GraspDataConfig, ObjectSplitConfig, ObservationTransform, episode_targets,
                                 load_clutter_data, read_view, resolve_object_split)
from vlkd_formats.dataset_dir import DatasetInfo

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_reads_episodes_labels_and_the_dataset_split(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    assert (data.id_objects, data.ood_objects, data.split_source) == (ID_OBJECTS, OOD_OBJECTS, "dataset")
    assert (len(data.train), len(data.x_id), len(data.x_ood)) == (32, 12, 72)
    grasp, present = episode_targets(data.train, data.id_objects)
    assert grasp.shape == (32, 4) and present.any(1).all() and (grasp <= present.float()).all()
    assert episode_targets(data.train, data.ood_objects)[1].sum() == 0  # no OOD object in a training scene
    assert data.descriptions["green triangle"].startswith("a small triangle")


def test_split_modes_and_their_errors(tiny_clutter):
    info = load_clutter_data(GraspDataConfig(root=str(tiny_clutter))).info
    half = resolve_object_split(info, ObjectSplitConfig(mode="half", seed=3))
    assert len(half[0]) == len(half[1]) == 4 and set(half[0] + half[1]) == set(info.labels)
    with pytest.raises(DatasetError, match="lacks the paper's YCB objects"):
        resolve_object_split(info, ObjectSplitConfig(mode="ycb"))
    leaky = ObjectSplitConfig(id=["blue square"], ood=["red circle"])
    with pytest.raises(DatasetError, match=r"OOD objects \['red circle'\] appear in 'train' episodes"):
        load_clutter_data(GraspDataConfig(root=str(tiny_clutter), split=leaky))
    with pytest.raises(DatasetError, match="explicit needs"):
        ObjectSplitConfig(mode="explicit", id=["a"]).validate()


def test_ycb_labels_get_the_papers_split_by_default():
    names = paper_split()["id"] + paper_split()["ood"] + ["extra thing"]
    ids, oods, source = resolve_object_split(DatasetInfo(kind="clutter", labels=names), ObjectSplitConfig())
    assert source == "ycb" and len(ids) == 14 and len(oods) == 12
    assert "master chef can" in ids and "rubiks cube" in oods
    asset_ids = [f"{i:03d}_{n.replace(' ', '_')}" for i, n in enumerate(names)]  # "000_master_chef_can", ...
    ids, oods, source = resolve_object_split(DatasetInfo(kind="clutter", labels=asset_ids), ObjectSplitConfig())
    assert source == "ycb" and ids[0] == "000_master_chef_can" and len(oods) == 12


def test_transform_stacks_views_and_checks_each(tiny_clutter):
    episode = load_clutter_data(GraspDataConfig(root=str(tiny_clutter))).train[0]
    views = ["base_rgb", "base_depth", "hand_rgb", "hand_depth"]
    tf = ObservationTransform(views, 32, MEAN, STD, depth_max_m=2.0)
    x = tf.read(episode)
    assert x.shape == (8, 32, 32) and tf.channels == 8 and tf.needs_depth
    obs = {v: read_view(v, episode.images[v]) for v in views}
    assert obs["base_depth"].dtype == np.uint16
    metres = dict(obs, base_depth=obs["base_depth"].astype(np.float32) / 1000, hand_depth=obs["hand_depth"][..., None])
    assert torch.allclose(tf(metres), x, atol=1e-5)  # uint16 mm == float32 m; HxWx1 == HxW
    wide = dict(obs, base_rgb=np.zeros((30, 70, 3), np.uint8))  # any HxW is resized and centre-cropped
    assert tf(wide).shape == (8, 32, 32)
    bad = {"base_rgb": (obs["base_rgb"].astype(np.float32), "HxWx3 uint8"),
           "hand_rgb": (obs["hand_rgb"][..., :2], "HxWx3 uint8"),
           "base_depth": (obs["base_depth"].astype(np.int64), "uint16 millimetres or float32 metres")}
    for view, (value, message) in bad.items():
        with pytest.raises(ValueError, match=f"view '{view}' must be .*{message}"):
            tf(dict(obs, **{view: value}))
    with pytest.raises(ValueError, match=r"lacks view\(s\) \['base_depth'\]"):
        tf({v: a for v, a in obs.items() if v != "base_depth"})
    with pytest.raises(DatasetError, match="must include 'base_rgb'"):
        ObservationTransform(["hand_rgb"], 32, MEAN, STD, 2.0)
