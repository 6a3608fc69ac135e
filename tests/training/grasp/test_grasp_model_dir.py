"""The grasp model dir on disk: refused with what to do when of the other kind or incomplete, and exported to ONNX
where backend onnx loads it, with the held-out frames' features beside it (`vlkd export`), the text tower of a dir
written before text_encoder/ held ONNX too."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from grasp_fixtures import copy_model
from training.grasp.text import TextTower
from training.teacher import Teacher, TeacherConfig
from training.grasp.model_dir import export_onnx, load_grasp_model_dir
from vlkd_formats.model_dir import ModelDirError, WrongKindError, held_out_features_file, onnx_file
from vlkd_ros.cli import main as cli

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_a_distill_or_incomplete_dir_is_no_grasp_model(tiny_grasp_model, tmp_path, capsys):
    assert cli(["eval", "--model", str(tiny_grasp_model)]) == 2  # `vlkd eval` takes distill model dirs
    err = capsys.readouterr().err
    assert f"{tiny_grasp_model} is a grasp model dir (kind 'grasp'); use it with `vlkd serve`" in err
    assert "not with `vlkd eval`" in err
    broken = copy_model(tiny_grasp_model, tmp_path / "broken")
    (broken / "grasp.json").unlink()
    with pytest.raises(ModelDirError, match="grasp.json not found: .* is an incomplete grasp model dir"):
        load_grasp_model_dir(broken)
    shutil.rmtree(broken)
    with pytest.raises(ModelDirError, match="does not exist"):
        load_grasp_model_dir(broken)
    assert issubclass(WrongKindError, ModelDirError)


def test_export_writes_the_onnx_file_of_the_current_weights(tiny_grasp_model, tmp_path, capsys):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    assert cli(["export", "--model", str(model_dir), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "a grasp model dir exports into its own onnx/ folder" in capsys.readouterr().err
    sha = load_grasp_model_dir(model_dir).registry.weights_sha256
    written = sorted((model_dir / "onnx").iterdir())  # train-grasp wrote the weights' serving files
    assert written == sorted(model_dir / rel for q in (False, True)
                             for rel in (onnx_file(sha, q), held_out_features_file(sha, q)))
    features = load_file(str(model_dir / held_out_features_file(sha)))["features"]
    shutil.rmtree(model_dir / "onnx")
    out = export_onnx(model_dir)
    assert out.onnx == model_dir / onnx_file(sha) and out.max_abs_diff < 1e-4 and out.int8_cosine >= 0.98
    assert sorted(out.files) == sorted((model_dir / "onnx").iterdir()) == written
    np.testing.assert_array_equal(load_file(str(model_dir / held_out_features_file(sha)))["features"], features)
    path = out.onnx
    before = path.stat().st_mtime_ns
    capsys.readouterr()
    assert cli(["export", "--model", str(model_dir), "--if-missing"]) == 0  # both there: nothing written
    assert json.loads(capsys.readouterr().out)["exported"] is False and path.stat().st_mtime_ns == before
    assert cli(["export", "--model", str(model_dir)]) == 0 and path.stat().st_mtime_ns != before


def test_export_converts_a_text_tower_saved_as_weights(tiny_grasp_model, tiny_teacher_file, tmp_path):
    """A dir whose text_encoder/ holds the tower's weights (as model dirs did before the ONNX text encoder): `vlkd
    export` writes the ONNX text encoder and tokenizer in their place, and serving encodes the labels' prompts as the
    teacher did."""
    import numpy as np
    from safetensors.numpy import load_file

    from vlkd_runtime.grasp_dir import read_served_model_dir
    from vlkd_runtime.text import OnnxTextEncoder

    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    text = model_dir / "text_encoder"
    shutil.rmtree(text)
    teacher = Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(tiny_teacher_file), device="cpu"))
    TextTower.from_teacher(teacher).save(text)
    assert cli(["export", "--model", str(model_dir)]) == 0
    assert sorted(p.name for p in text.iterdir()) == ["text.onnx", "text_encoder.json", "tokenizer.json"]
    served = read_served_model_dir(model_dir)
    teacher_features = load_file(str(model_dir / "text_features.safetensors"))
    for part in ("id", "ood"):
        assert np.abs(OnnxTextEncoder(text).encode(served.card.texts[part]) - teacher_features[part]).max() < 1e-5
