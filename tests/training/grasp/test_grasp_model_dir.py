"""The grasp model dir on disk: refused with what to do when of the other kind or of format v1, converted from v1
without loss (`vlkd convert-model`), and exported to ONNX where backend onnx loads it (`vlkd export`)."""
import shutil

import pytest
import torch

from grasp_fixtures import copy_model, make_v1_dir
from training.grasp.model_dir import export_onnx, load_grasp_model_dir, read_grasp_card
from training.model_dir import convert_model_dir
from vlkd_formats.model_dir import GRASP_ENTRIES, ModelDirError, OldModelDirError, WrongKindError, onnx_file
from vlkd_ros.cli import main as cli

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_a_v1_dir_is_refused_with_the_converter_which_converts_it_without_loss(tiny_grasp_model, tmp_path, capsys):
    old = make_v1_dir(tiny_grasp_model, tmp_path / "old_run")
    for call in (lambda: load_grasp_model_dir(old), lambda: read_grasp_card(old)):
        with pytest.raises(OldModelDirError, match=f"`vlkd convert-model {old}`"):
            call()
    assert cli(["add-object", "--model", str(old), "--name", "cup", "--images", "a.png"]) == 2
    assert f"Convert it once with `vlkd convert-model {old}`" in capsys.readouterr().err

    shutil.rmtree(old / "onnx")  # v1 training wrote no ONNX export
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*")}
    assert cli(["convert-model", str(old)]) == 0
    out = capsys.readouterr().out
    assert f"model dir: {old / 'model'} (kind grasp)" in out
    assert f"exported the image encoder to {old / 'model' / 'onnx'}" in out  # what the node's default backend runs
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the old files are left as they were
    assert {p for p in old.rglob("*") if p not in before} == {old / "model", *(old / "model").rglob("*")}
    assert sorted(p.name for p in (old / "model").iterdir()) == sorted([*GRASP_ENTRIES, "onnx"])

    new, original = load_grasp_model_dir(old), load_grasp_model_dir(tiny_grasp_model)  # OLD reads as OLD/model now
    assert new.root == old / "model"
    assert (new.card, new.grasp, new.registry) == (original.card, original.grasp, original.registry)
    assert all(torch.equal(v, original.student.state_dict()[k]) for k, v in new.student.state_dict().items())
    with pytest.raises(ModelDirError, match="already a model dir of format v2; there is nothing to convert"):
        convert_model_dir(old / "model")
    with pytest.raises(ModelDirError, match="exists and is not empty; pass another output dir"):
        convert_model_dir(old)
    elsewhere = convert_model_dir(old, tmp_path / "deploy" / "grasp")
    assert load_grasp_model_dir(elsewhere).registry == original.registry


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
    trained = sorted(p.name for p in (model_dir / "onnx").iterdir())  # train-grasp wrote the weights' export
    assert trained == [onnx_file(load_grasp_model_dir(model_dir).registry.weights_sha256).split("/")[-1]]
    shutil.rmtree(model_dir / "onnx")
    path, diff = export_onnx(model_dir)
    assert path == model_dir / onnx_file(load_grasp_model_dir(model_dir).registry.weights_sha256) and diff < 1e-4
    assert [p.name for p in (model_dir / "onnx").iterdir()] == [path.name]
