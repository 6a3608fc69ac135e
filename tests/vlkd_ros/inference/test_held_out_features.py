"""The held-out frames' features a few-shot job judges a new object against are written with the weights' ONNX
export (`vlkd train-grasp`, `vlkd export --model DIR`: tests/training/grasp/test_grasp_model_dir.py) and read by
the node's first job instead of embedding the frames: they equal what the node computes itself, bit for bit (the
float32 encoder's and the int8 copy's), so an object learnt with them is the object learnt without; a stale or
damaged file is ignored, never trusted."""
import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_ros.inference import GraspFeasibility
from vlkd_runtime.grasp_dir import read_served_model_dir
from vlkd_runtime.held_out_features import HELD_OUT_LOCATIONS, held_out_features
from vlkd_runtime.onnx_session import image_features, onnx_session

NEW = "orange square"


@pytest.fixture
def detector_dir(tiny_detector_grasp_model, tmp_path):
    """A private copy of the tiny detector model dir."""
    return copy_model(tiny_detector_grasp_model, tmp_path / "model")


def learnt(model_dir, tiny_clutter) -> tuple[dict, list]:
    """The registry entry of NEW learnt from 5 shots by a one-thread ONNX node, and its answers on 6 frames."""
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    shots = [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood
             if NEW in e.objects and e.objects[NEW].graspable][:5]
    frames = [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood[-6:]]
    model = GraspFeasibility.from_checkpoint(model_dir, backend="onnx", threads=1)
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)
    job = model.add_object(NEW, shots)
    assert job.wait(120) and job.state == "succeeded", job.message
    answers = model.query(frames, [NEW])
    model.close()
    entry = next(o for o in json.loads((model_dir / "registry.json").read_text())["objects"] if o["name"] == NEW)
    return entry, answers


@pytest.mark.parametrize("int8", [False, True])
def test_the_stored_features_are_the_ones_a_node_computes(detector_dir, int8):
    served = read_served_model_dir(detector_dir)
    held = served.held_out(served.held_out_features_path(int8))
    assert held.features_path.is_file() and held.features_path.parent == served.onnx_path(int8=int8).parent
    stored = load_file(str(held.features_path))["features"]
    session = onnx_session(served.onnx_path(int8=int8), threads=1)
    computed = held_out_features(lambda x: image_features(session, x), held, detector=True)
    assert stored.shape == (len(held.targets), min(HELD_OUT_LOCATIONS, 36), computed.shape[-1])
    np.testing.assert_array_equal(stored, computed)


def test_an_object_learnt_with_them_is_the_object_learnt_without(detector_dir, tiny_clutter, tmp_path, caplog):
    without = copy_model(detector_dir, tmp_path / "without")
    read_served_model_dir(without).held_out_features_path().unlink()
    stale = copy_model(detector_dir, tmp_path / "stale")  # features said to come from another replay file
    path = read_served_model_dir(stale).held_out_features_path()
    save_file(load_file(str(path)), str(path), metadata={"replay_sha256": "0" * 64})
    damaged = copy_model(detector_dir, tmp_path / "damaged")
    read_served_model_dir(damaged).held_out_features_path().write_bytes(b"not safetensors")

    entry, answers = learnt(detector_dir, tiny_clutter)
    with caplog.at_level(logging.WARNING, logger="vlkd_runtime.held_out_features"):
        for other in (without, stale, damaged):
            assert learnt(other, tiny_clutter) == (entry, answers)
    assert sum("ignoring" in r.getMessage() for r in caplog.records) == 2  # the stale and the damaged file
