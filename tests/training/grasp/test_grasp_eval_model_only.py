"""`vlkd eval-grasp --model DIR eval.benchmark=BENCH` when the model's training dataset is not on this machine: the
benchmark's zero-shot figures from the model dir alone, and without a benchmark one error naming the render command."""
import json

from grasp_fixtures import copy_model, make_clutter_dataset
from training.grasp.eval import render_hint
from vlkd_ros.cli import main as cli


def test_a_model_dir_and_a_benchmark_are_enough_for_the_zero_shot_figures(tiny_grasp_model, tmp_path, capsys):
    bench = make_clutter_dataset(tmp_path / "bench", n_train=10, n_id=10, n_ood=30, seed=7)
    alone = copy_model(tiny_grasp_model, tmp_path / "model")
    missing = tmp_path / "data" / "clutter_train"
    assert cli(["eval-grasp", f"eval.benchmark={bench}", f"train.data.root={missing}", "--model", str(alone)]) == 0
    student, teacher = json.loads((alone / "eval" / "table.json").read_text())["rows"]
    assert student["few_shot"] is None and student["counts"]["x_id"] == 20 and student["counts"]["x_ood_query"] == 30
    for column in ("x_id", "id_on_ood", "ood_on_ood"):
        assert student["zero_shot"][column]["frames"] == (20 if column == "x_id" else 30)
        assert 0.0 <= student["zero_shot"][column]["f1_all"] <= 1.0 and 0.0 <= student["zero_shot"][column]["auc"] <= 1
        assert teacher["zero_shot"][column]["f1_all"] != teacher["zero_shot"][column]["f1_all"]  # NaN: uncalibrated
        assert 0.0 <= teacher["zero_shot"][column]["auc"] <= 1.0
    assert teacher["threshold"] is None and 0.0 <= teacher["crop_top1"]["id_all"] <= 1.0
    shown = capsys.readouterr().out
    assert f"vlkd collect clutter --config clutter_train --out {missing}" in shown and "n/a" in shown
    assert "X_ood 30 frames; zero-shot only." in shown and "support frames" not in shown
    assert not missing.exists()


def test_without_a_benchmark_the_missing_training_dataset_is_one_error_with_the_command(tiny_grasp_model, tmp_path,
                                                                                       capsys, monkeypatch):
    alone = copy_model(tiny_grasp_model, tmp_path / "model")
    monkeypatch.chdir(tmp_path)  # the relative data root must be missing, whatever the checkout has rendered
    assert cli(["eval-grasp", "train.data.root=data/clutter_train", "--model", str(alone)]) == 2
    err = capsys.readouterr().err
    assert "vlkd collect clutter --config clutter_train --out data/clutter_train" in err and "eval.benchmark" in err


def test_the_render_hint_names_a_shipped_collection_config_only_when_one_fits():
    assert render_hint("data/clutter_heldout") == ("render it with `vlkd collect clutter --config clutter_heldout "
                                                   "--out data/clutter_heldout`")
    assert "--config" not in render_hint("somewhere/my_scenes")


def test_overrides_after_model_are_refused_not_read_as_model_dirs(tiny_grasp_model, capsys):
    assert cli(["eval-grasp", "--model", str(tiny_grasp_model), "eval.benchmark=data/clutter_heldout"]) == 2
    assert "put dotted overrides before --model" in capsys.readouterr().err
