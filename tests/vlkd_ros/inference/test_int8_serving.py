"""The int8 copy of a model's image encoder (`vlkd export`, `vlkd train-grasp`): written only when its features
stay within a median cosine of 0.98 of the float32 ones on held-out frames, served by backend "onnx-int8" and by
"auto" where it was written (else "auto" serves the float32 export); a backend whose file is missing is refused
with what to run."""
import logging

import numpy as np
import pytest

from grasp_fixtures import copy_model
from training.grasp import model_dir as grasp_model_dir
from training.grasp.model_dir import export_onnx
from vlkd_formats.model_dir import ModelDirError
from vlkd_ros.inference import GraspFeasibility
from vlkd_runtime.grasp_dir import read_served_model_dir
from vlkd_runtime.onnx_session import image_features, onnx_session


@pytest.fixture
def detector_dir(tiny_detector_grasp_model, tmp_path):
    """A private copy of the tiny detector model dir."""
    return copy_model(tiny_detector_grasp_model, tmp_path / "model")


def held_out_frames(served) -> np.ndarray:
    """Every held-out frame of the model dir, float32."""
    return np.concatenate(list(served.held_out().batches(64)))


def test_the_int8_encoder_keeps_the_features_it_was_checked_for(detector_dir):
    served = read_served_model_dir(detector_dir)
    frames = held_out_frames(served)
    ref = image_features(onnx_session(served.onnx_path(), threads=1), frames)
    out = image_features(onnx_session(served.onnx_path(int8=True), threads=1), frames)
    cosine = (ref * out).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(out, axis=-1))
    assert np.median(cosine) >= 0.97  # checked >= 0.98 on the first 32 of these frames
    assert served.onnx_path(int8=True).stat().st_size < served.onnx_path().stat().st_size / 2


def test_auto_serves_the_int8_copy_where_it_was_written_and_float32_elsewhere(detector_dir):
    model = GraspFeasibility.from_checkpoint(detector_dir, backend="auto", threads=1)
    frames = [np.full((48, 48, 3), v, np.uint8) for v in (40, 200)]
    names = [n for n, _ in model.objects()]
    int8_answers = model.query(frames, names)
    assert model.backend == "onnx-int8"
    model.close()
    served = read_served_model_dir(detector_dir)
    served.onnx_path(int8=True).unlink()
    model = GraspFeasibility.from_checkpoint(detector_dir, backend="auto", threads=1)
    assert model.backend == "onnx"
    fp32_answers = model.query(frames, names)
    model.close()
    assert [sorted(a) for a in int8_answers] == [sorted(a) for a in fp32_answers]


def test_an_unfaithful_int8_copy_is_not_written(detector_dir, monkeypatch, caplog):
    monkeypatch.setattr(grasp_model_dir, "INT8_MIN_COSINE", 1.01)  # no int8 copy is that faithful
    with caplog.at_level(logging.WARNING, logger="training.grasp.model_dir"):
        out = export_onnx(detector_dir)
    assert out.int8 is None and 0.9 < out.int8_cosine < 1.01
    assert sorted(p.name for p in (detector_dir / "onnx").iterdir()) == sorted(p.name for p in out.files)
    assert any("no int8 encoder" in r.getMessage() for r in caplog.records)
    model = GraspFeasibility.from_checkpoint(detector_dir, backend="auto")
    assert model.backend == "onnx"
    model.close()
    with pytest.raises(ModelDirError, match=r"backend 'onnx-int8' runs .*run `vlkd export --model"):
        GraspFeasibility.from_checkpoint(detector_dir, backend="onnx-int8")
