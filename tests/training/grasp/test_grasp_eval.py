"""`vlkd eval-grasp`: Table 11 (accuracy / F1 over present objects / ROC AUC, zero-shot / k-shot) from one command."""
import json

import pytest
import torch

from grasp_fixtures import copy_model, grasp_overrides
from training.grasp.data import GraspDataConfig, load_clutter_data
from training.grasp.eval import COLUMNS, column_metrics, select_support
from vlkd_ros.cli import main as cli

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_one_command_trains_the_rows_and_writes_table_11(tiny_clutter, tiny_teacher_file, tmp_path, capsys):
    train = [f"train.{o}" for o in grasp_overrides(tiny_clutter, tiny_teacher_file, tmp_path / "unused",
                                                   tmp_path / "cache") if not o.startswith("output_dir")]
    table = tmp_path / "table.yaml"
    table.write_text("train_config: null\n")  # rows: the default L_cls, +L_im-cst, +rich descriptions
    assert cli(["eval-grasp", "--table", str(table), *train, "train.optim.epochs=1", f"out_dir={tmp_path / 'table'}",
                "eval.k_shot=3", "eval.fewshot.steps=2"]) == 0
    shown = capsys.readouterr().out
    assert "(a) ROC AUC over all (frame, object) pairs (threshold-free), zero-shot / 3-shot" in shown
    assert "(b) F1 of graspable over all pairs" in shown and "(d) Frames answered fully right" in shown
    assert '(c) Overall accuracy (answering "no" to every pair)' in shown
    assert "| method | Y_id on X_id | Y_id on X_ood | Y_ood on X_ood |" in shown
    result = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [row["name"] for row in result["rows"]] == ["L_cls", "+L_im-cst", "+rich descriptions"]
    for row in result["rows"]:
        for mode in ("zero_shot", "few_shot"):
            for column, _ in COLUMNS:
                m = row[mode][column]
                assert 0.0 <= m["accuracy"] <= 1.0 and m["pairs"] > 0
        assert row["counts"]["x_ood_support"] + row["counts"]["x_ood_query"] == 72
        assert sorted(row["few_shot_thresholds"]) == sorted(result["rows"][0]["objects"]["ood"])
        assert all(0.0 <= t <= 1.0 for t in row["few_shot_thresholds"].values())
    cards = {name: json.loads((tmp_path / "table" / slug / "model" / "grasp.json").read_text())["text"]
             for name, slug in (("L_cls", "l_cls"), ("+rich descriptions", "rich_descriptions"))}  # run dir/model
    assert not cards["L_cls"]["use_descriptions"] and cards["+rich descriptions"]["use_descriptions"]


def test_support_selection_and_metrics(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    support, query = select_support(data.x_ood, data.ood_objects, 5, seed=0)
    assert not set(support) & set(query) and len(support) + len(query) == len(data.x_ood)
    with pytest.raises(ValueError, match="graspable in only .* X_ood observations; 50-shot"):
        select_support(data.x_ood, data.ood_objects, 50, seed=0)
    m = column_metrics(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                       torch.tensor([[True, False], [True, True]]), 0.5)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(2 / 3) and m["present_pairs"] == 3
    assert m["always_no"] == 0.75 and m["frames_right"] == 0.5  # frame 2 answers its second object wrongly
    assert m["auc"] == 1.0  # the one graspable pair outranks all three others
    per_column = column_metrics(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                                torch.tensor([[True, False], [True, True]]), torch.tensor([[0.5, 0.85]]))
    assert per_column["accuracy"] == 1.0 and per_column["f1"] == 1.0  # 0.8 < 0.85: the second object says no


def test_a_model_dir_alone_is_evaluated_from_its_card(tiny_grasp_model, tmp_path, capsys):
    alone = copy_model(tiny_grasp_model, tmp_path / "alone")  # no run dir and no config.yaml anywhere near it
    assert cli(["eval-grasp", "eval.k_shot=3", "eval.fewshot.steps=2", "--model", str(alone)]) == 0
    assert "| method | Y_id on X_id | Y_id on X_ood | Y_ood on X_ood |" in capsys.readouterr().out
    row = json.loads((alone / "eval" / "table.json").read_text())["rows"][0]
    assert row["model_dir"] == str(alone) and row["counts"]["x_ood_support"] + row["counts"]["x_ood_query"] == 72
    assert cli(["eval-grasp", "eval.k_shot=3", "train.data.root=/nowhere", "--model", str(alone)]) == 2
    assert "/nowhere" in capsys.readouterr().err  # overrides still apply to the recorded training config


def test_a_held_out_benchmark_is_evaluated_with_the_teacher_row(tiny_grasp_model, tmp_path, capsys):
    from grasp_fixtures import make_clutter_dataset

    bench = make_clutter_dataset(tmp_path / "bench", n_train=10, n_id=10, n_ood=30, seed=7)
    alone = copy_model(tiny_grasp_model, tmp_path / "model")
    assert cli(["eval-grasp", "eval.k_shot=3", "eval.fewshot.steps=2", f"eval.benchmark={bench}", "--model",
                str(alone)]) == 0
    result = json.loads((alone / "eval" / "table.json").read_text())
    student, teacher = result["rows"]
    assert student["counts"]["x_id"] == 20 and student["counts"]["x_ood_query"] == 30  # every benchmark frame
    assert 0.0 <= student["fewshot_raised_f1"]["share"] <= 1.0
    assert teacher["name"].startswith("teacher") and teacher["few_shot"] is None
    for row in (student, teacher):
        for column, _ in COLUMNS:
            m = row["zero_shot"][column]
            assert m["frames"] == (20 if column == "x_id" else 30) and 0.0 <= m["always_no"] <= 1.0
    shown = capsys.readouterr().out
    assert "held-out benchmark" in shown and "| teacher (" in shown and "top-1" in shown and "Y_ood objects" in shown
    assert 0.0 <= teacher["crop_top1"]["id"] <= 1.0 and 0.0 <= teacher["crop_top1"]["ood"] <= 1.0
    training_data = json.loads((alone / "model.json").read_text())["training"]["data"]["root"]
    with pytest.raises(ValueError, match="is the training dataset"):
        from training.grasp.eval import GraspEvalConfig, evaluate_grasp
        evaluate_grasp(alone, GraspEvalConfig(k_shot=3, benchmark=training_data))
