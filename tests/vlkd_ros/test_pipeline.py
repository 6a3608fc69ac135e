"""The offline mini-world end to end: real renders, the shipped teacher, distillation and evaluation."""
import json

import numpy as np
import pytest

from vlkd_ros.cli import main as cli
from vlkd_ros.pipeline import (TABLE1_ROWS, MiniWorldConfig, ReproduceConfig, demo_summary, run_demo, run_reproduce,
                               table1_markdown)


@pytest.mark.sim
def test_demo_and_reproduce_on_a_tiny_mini_world(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the base config's relative cache dir lands here
    config = MiniWorldConfig(workdir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"), per_class=6,
                             epochs=1, fewshot_steps=2, clutter_dir=str(tmp_path / "clutter"), clutter_episodes=8,
                             grasp_epochs=1)
    report = run_demo(config)
    student = report["result"]["student"]
    assert set(student) == {"id", "ood_0shot", "ood_kshot", "ood_kshot_retrieval"}
    assert report["result"]["counts"]["y_id"] == report["result"]["counts"]["y_ood"] == 20
    assert json.loads((tmp_path / "runs" / "demo_report.json").read_text())["model_dir"] == report["model_dir"]
    # The grasp head started from the distilled student and answered every object on a held-out frame.
    grasp_card = json.loads((tmp_path / "runs" / "grasp" / "model" / "model.json").read_text())
    assert grasp_card["info"]["student_init"] == report["model_dir"]
    query = report["grasp_queries"]["this demo's grasp model"]
    assert 1 <= len(query["frames"]) <= 3  # held-out frames only (8 scenes hold a few)
    for frame in query["frames"]:
        answers = frame["answers"]
        assert [a["truth"] for a in answers][-1] is False and len(answers) >= 2
        assert all(0.0 <= a["score"] <= 1.0 and a["graspable"] == (a["score"] >= query["threshold"]) for a in answers)
        assert frame["accuracy"] == sum(a["graspable"] == a["truth"] for a in answers) / len(answers)
    assert "| object | score | answer | truth |" in demo_summary(report)
    assert (tmp_path / "runs" / "grasp_answers.png").stat().st_size > 10000

    summary = run_reproduce(config, ReproduceConfig(seeds=[0], rows=["L_cls", "+L_im-cst"]))
    assert list(summary) == ["L_cls", "+L_im-cst"]
    table = (tmp_path / "runs" / "table1.md").read_text()
    assert "| L_cls |" in table and (tmp_path / "runs" / "table1.png").stat().st_size > 1000


def test_table1_rows_add_one_term_each():
    losses = [next(o for o in overrides if o.startswith("losses=")) for _, overrides in TABLE1_ROWS]
    assert [row.count("type:") for row in losses] == [1, 2, 3, 4, 4, 6]
    md = table1_markdown({"L_cls": {"id": (0.5, 0.1), "ood_0shot": (0.25, 0.0), "ood_kshot": (0.4, 0.05)}}, 5, 3)
    assert "| L_cls | 50.0 ± 10.0 | 25.0 ± 0.0 | 40.0 ± 5.0 |" in md


def test_unknown_reproduce_row_is_rejected(tmp_path, capsys):
    assert cli(["reproduce", "--rows", "L_nope", "--workdir", str(tmp_path)]) == 2
    assert "unknown Table-1 row" in capsys.readouterr().err


@pytest.mark.sim
def test_build_grasp_model_collects_trains_and_installs_the_detector(tmp_path, monkeypatch):
    """`vlkd build-grasp-model` end to end at a tiny size: multi-view scenes with masks, the shipped detector recipe,
    the model dir installed at --out; served as the default model, its answers carry locations."""
    monkeypatch.chdir(tmp_path)
    collect = tmp_path / "collect.yaml"
    collect.write_text("objects: offline\nseed: 3\nimage_size: 48\nepisodes: 6\nviews_per_scene: 2\n"
                       "ood_episode_fraction: 0.3\nval_fraction: 0.3\nsettle_steps: 40\n")
    out = tmp_path / "installed"
    assert cli(["build-grasp-model", "--collect-config", str(collect), "--data-dir", str(tmp_path / "scenes"),
                "--workdir", str(tmp_path / "run"), "--out", str(out), "--workers", "1", "optim.epochs=1",
                "data.image_size=48", "val_size=4", "replay_size=4", "teacher.cache_dir=cache"]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["student"]["arch"] == "resnet18" and card["student"]["head"] == "detector"
    rows = [json.loads(line) for line in (tmp_path / "scenes" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("base_seg" in r["images"] for r in rows)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert all(f"loss/{term}" in metrics for term in ("region", "det_heatmap", "det_crop", "det_match"))
    monkeypatch.setenv("VLKD_DEFAULT_MODEL_DIR", str(out))
    from vlkd_ros.inference import GraspFeasibility
    from vlkd_ros.pipeline import grasp_query_example, shipped_grasp_model

    assert shipped_grasp_model() == out
    model = GraspFeasibility.from_checkpoint()
    answers = model.query(np.zeros((48, 64, 3), np.uint8) + 120, ["banana"])[0]["banana"]
    assert 0 <= answers["location"]["u"] <= 1 and 0.0 <= answers["score"] <= 1.0
    model.close()
    query = grasp_query_example(out, tmp_path / "scenes")
    assert query["frames"] and all("location" in a for f in query["frames"] for a in f["answers"])
