"""`vlkd train-grasp`: a complete grasp model dir, apart from the run dir, whose parts (text tower, replay, registry)
reload on their own."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vlkd_formats.config import load_config, to_dict
from vlkd_formats.model_dir import GRASP_ENTRIES, held_out_features_file, onnx_file, read_card
from training.grasp.model_dir import ReplayBuffer, load_grasp_model_dir
from training.grasp.train import GraspTrainConfig
from training.students import StudentError
from vlkd_formats.object_registry import read_registry
from vlkd_runtime.text import OnnxTextEncoder

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_trained_model_dir_is_complete_and_self_contained(tiny_grasp_model):
    run = tiny_grasp_model.parent  # the run dir: training's files only; the model dir: what serving needs only
    assert tiny_grasp_model.name == "model"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "model"}
    assert sorted(p.name for p in tiny_grasp_model.iterdir()) == sorted([*GRASP_ENTRIES, "onnx"])
    card = read_card(run, expect_kind="grasp")  # the run dir is read through its model/ folder
    assert card.kind == "grasp" and card.version == 2 and card.info["task"] == "grasp"
    assert card.training == to_dict(load_config(GraspTrainConfig, run / "config.yaml"))  # eval needs no run dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert {"loss/bce", "loss/im_cst"} <= set(records[-1]) and records[-1]["loss/total"] < records[0]["loss/total"]
    model = load_grasp_model_dir(tiny_grasp_model)
    assert model.card.labels == {"id": ["red circle", "blue square", "yellow triangle", "white bar"],
                                 "ood": ["green triangle", "purple circle", "orange square", "cyan bar"]}
    assert 0.0 <= model.grasp.threshold <= 1.0 and model.grasp.calibration["split"] == "val_on_train"
    assert model.grasp.views == ["base_rgb"] and model.grasp.image_size == 32
    registry = read_registry(tiny_grasp_model)
    assert registry.names() == model.card.labels["id"] and registry.model_version.startswith("v0-")
    assert registry.get("Red_Circle").description == "a small circle that is plain red"
    # The saved ONNX text tower alone reproduces the teacher's prompt features, for any new name too.
    tower = OnnxTextEncoder(tiny_grasp_model / "text_encoder")
    assert np.allclose(tower.encode(model.card.texts["ood"]), model.text_features["ood"].numpy(), atol=1e-5)
    # The ONNX export of the weights (what backend onnx runs) matches PyTorch; its int8 copy (backend onnx-int8,
    # written when faithful, as it is here) and each one's features of the held-out frames are beside it.
    sha = registry.weights_sha256
    assert sorted((tiny_grasp_model / "onnx").iterdir()) == sorted(
        tiny_grasp_model / rel for q in (False, True) for rel in (onnx_file(sha, q), held_out_features_file(sha, q)))
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(model.onnx_path()), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(session.run(["features"], {"images": images.numpy()})[0]),
                              model.student(images), atol=1e-4)
    replay = ReplayBuffer.load(tiny_grasp_model / "replay.safetensors")
    assert replay.inputs.shape == (24, 3, 32, 32) and replay.targets.shape == (24, 4)
    assert replay.teacher.shape == (24, 64) and replay.val_inputs.shape == (12, 3, 32, 32)


def test_rgbd_hand_model_from_the_cli(tiny_rgbd_grasp_model):
    model = load_grasp_model_dir(tiny_rgbd_grasp_model)
    assert model.grasp.views == ["base_rgb", "base_depth", "hand_rgb", "hand_depth"]
    assert model.student.config.in_chans == 8 and model.transform().needs_depth


def test_channels_must_match_the_views(tiny_clutter):
    with pytest.raises(StudentError, match="in_chans=3 but data.views .* stack 4 channels; set student.in_chans=4"):
        load_config(GraspTrainConfig, None, [f"data.root={tiny_clutter}", "data.views=[base_rgb, base_depth]"])
    with pytest.raises(ValueError, match="do not apply to clutter"):
        load_config(GraspTrainConfig, None, ["losses=[{type: asl}, {type: cls}]"])


def test_student_init_loads_a_model_dirs_student_and_refuses_a_mismatch(tiny_grasp_model):
    from safetensors.torch import load_file

    from training.grasp.train import init_student
    from training.model_dir import read_model_card
    from training.students import Student, StudentConfig

    card = read_model_card(tiny_grasp_model)
    student = Student(StudentConfig(**card.student), card.embed_dim, card.image_size)
    init_student(student, str(tiny_grasp_model), card.embed_dim, card.image_size)
    saved = load_file(str(tiny_grasp_model / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in student.state_dict().items())
    with pytest.raises(StudentError, match="does not fit this training"):
        init_student(Student(StudentConfig(**card.student), card.embed_dim, 48), str(tiny_grasp_model),
                     card.embed_dim, 48)


def test_augmented_training_runs_and_its_crop_bound_is_checked(tiny_clutter, tiny_teacher_file, tmp_path):
    from grasp_fixtures import grasp_overrides
    from training.grasp.data import DatasetError
    from training.grasp.train import train_grasp

    overrides = grasp_overrides(tiny_clutter, tiny_teacher_file, tmp_path / "model", tmp_path / "cache")
    with pytest.raises(DatasetError, match="augment_min_area must be in"):
        load_config(GraspTrainConfig, None, [*overrides, "data.augment_min_area=0.05"])
    model_dir = train_grasp(load_config(GraspTrainConfig, None, [*overrides, "optim.epochs=1", "data.augment=true"]))
    calibration = json.loads((model_dir / "grasp.json").read_text())["calibration"]
    assert 0.0 <= calibration["auc"] <= 1.0 and calibration["split"] == "val_on_train"
