"""GraspFeasibility: batched open-vocabulary queries, clear input errors, few-shot learning (a query vector per new
object) in the background with validate-then-swap, persistence across restarts and crashes (inside the model dir
only), and the ONNX backend (exported by train-grasp and `vlkd export`, never while loading; a
few-shot commit serves the same export)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_formats.model_dir import ModelDirError, onnx_file
from vlkd_formats.object_registry import read_registry, write_registry
from vlkd_ros.inference import GraspFeasibility, name_quality

pytestmark = pytest.mark.usefixtures("torch_single_thread")
REPO = Path(__file__).resolve().parents[3]
NEW = "orange square"


@pytest.fixture(scope="module")
def data(tiny_clutter):
    return load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))


def _frames(episodes):
    return [read_view("base_rgb", e.images["base_rgb"]) for e in episodes]


def _shots_and_query(data, name=NEW, k=5):
    shots = [e for e in data.x_ood if name in e.objects and e.objects[name].graspable][:k]
    return shots, [e for e in data.x_ood if e not in shots]


def _accept_any_fit(model: GraspFeasibility) -> None:
    """Tests of the swap path accept every fit: whether the tiny model's features tell its shapes apart on 5 shots
    is a coin flip (the check's quality on the shipped model: benchmarks/bench_fewshot_queries.py)."""
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)


def test_query_is_batched_open_vocabulary_and_thresholded(tiny_grasp_model, data):
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model)
    assert (model.image_size, model.needs_depth, model.views) == (32, False, ["base_rgb"])
    assert model.model_version.startswith("v0-") and [n for n, _ in model.objects()][0] == "red circle"
    frames = _frames(data.x_ood[:3])
    names = ["red circle", "green triangle", "banana split"]  # a trained name, an OOD name, a name never seen
    out = model.query(frames, names)
    assert len(out) == 3 and all(list(r) == names for r in out)
    for row in out:
        for answer in row.values():
            assert 0.0 <= answer["score"] <= 1.0 and answer["graspable"] == (answer["score"] >= model.threshold)
    one = model.query(frames[1], ["Red_Circle"])  # one array -> one result; names are normalised
    assert one[0]["Red_Circle"]["score"] == pytest.approx(out[1]["red circle"]["score"], abs=1e-5)
    bigger = np.asarray(Image.fromarray(frames[0]).resize((80, 60)))  # any HxW is resized to the model's size
    assert set(model.query(bigger, ["red circle"])[0]) == {"red circle"}


def test_bad_inputs_raise_clear_errors(tiny_grasp_model, tiny_rgbd_grasp_model, data):
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model)
    frame = _frames(data.train[:1])[0]
    cases = [(lambda: model.query(frame, [""]), "is empty"), (lambda: model.query(frame, ["  "]), "is empty"),
             (lambda: model.query(frame, ["?!"]), "no letters or digits"),
             (lambda: model.query(frame, "red circle"), r"use \['red circle'\]"),
             (lambda: model.query(frame, []), "non-empty list"), (lambda: model.query(frame, [3]), "must be a string"),
             (lambda: model.query(frame.astype(np.float32), ["x"]), "image 0: view 'base_rgb' must be an HxWx3 uint8"),
             (lambda: model.query([frame, frame[..., :2]], ["x"]), r"image 1: .*shape \(48, 48, 2\)"),
             (lambda: model.query(frame[..., 0], ["x"]), "HxWx3 uint8"),
             (lambda: model.query([], ["x"]), "no images given"),
             (lambda: model.add_object("new thing", [frame] * 2), "needs at least k=5 shots, got 2"),
             (lambda: model.add_object("new thing", [frame] * 2, k=0), "k must be an integer >= 2"),
             (lambda: model.add_object("", [frame] * 5), "is empty")]
    rgbd = GraspFeasibility.from_checkpoint(tiny_rgbd_grasp_model)
    episode = data.train[0]
    obs = {v: read_view(v, episode.images[v]) for v in rgbd.views}
    cases += [(lambda: rgbd.query(frame, ["x"]), r"depth is required\): pass a dict"),
              (lambda: rgbd.query({"base_rgb": frame, "hand_rgb": frame}, ["x"]), r"lacks view\(s\) \['base_depth'"),
              (lambda: rgbd.query(dict(obs, base_depth=obs["base_depth"].astype(np.float64)), ["x"]), "float32 metres")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert rgbd.needs_depth
    metres = dict(obs, base_depth=obs["base_depth"].astype(np.float32) / 1000)
    same = rgbd.query(obs, ["x"])[0]["x"]["score"]
    assert rgbd.query(metres, ["x"])[0]["x"]["score"] == pytest.approx(same, abs=1e-5)


def test_add_object_learns_in_the_background_and_survives_a_restart(tiny_grasp_model, data, tmp_path):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    model = GraspFeasibility.from_checkpoint(model_dir)
    _accept_any_fit(model)
    shots, held_out = _shots_and_query(data)
    before = name_quality(model, held_out, NEW)
    first = model.model_version
    job = model.add_object(NEW, _frames(shots), description="a small square that is plain orange")
    assert job.state in ("queued", "running") and model.job(job.job_id) is job
    assert (NEW, "a small square that is plain orange") in model.objects()  # answerable zero-shot at once
    frame, answered, slowest = _frames(held_out[:1]), 0, 0.0
    while not job.wait(0.01):  # queries are served while the job runs
        t0 = time.perf_counter()
        assert NEW in model.query(frame, [NEW])[0]
        answered, slowest = answered + 1, max(slowest, time.perf_counter() - t0)
    assert job.state == "succeeded", job.message
    assert model.model_version == f"{first}.r1"  # same weights, one more registry revision
    after = name_quality(model, held_out, NEW)
    print(f"held-out {NEW!r}: F1 {before['f1']:.2f} -> {after['f1']:.2f}, AUC {before['auc']:.2f} -> "
          f"{after['auc']:.2f}; {answered} queries during the job, slowest {slowest * 1000:.0f} ms; {job.report}")
    # the prior weight is chosen where leave-one-out does best, the text direction itself among the candidates
    assert job.report["heldout_auc"] >= job.report["zero_shot_heldout_auc"]
    assert after["tp"] + after["fn"] == after["graspable"] and after["observations"] == len(held_out)

    model.close()  # releases the model dir's writer lock for the next instance
    restarted = GraspFeasibility.from_checkpoint(model_dir)
    assert restarted.model_version == model.model_version
    entry = read_registry(model_dir).get(NEW)
    assert entry.query and not entry.finetuned and entry.n_shots == 5 and entry.source == "added"
    assert entry.threshold == pytest.approx(job.report["threshold"])  # its own, calibrated on frames without it
    assert restarted.threshold_for(NEW) == pytest.approx(entry.threshold) and after["threshold"] == entry.threshold
    assert restarted.threshold_for("red circle") == restarted.threshold  # trained objects keep the model's
    answer = restarted.query(frame, [NEW])[0][NEW]
    assert answer["graspable"] == (answer["score"] >= entry.threshold)
    assert restarted.query(frame, [NEW])[0][NEW]["score"] == pytest.approx(model.query(frame, [NEW])[0][NEW]["score"],
                                                                          abs=1e-5)
    _accept_any_fit(restarted)
    again = restarted.add_object("Orange  Square", _frames(shots), description="an orange box")  # update, not a copy
    assert again.wait(120) and again.state == "succeeded", again.message
    assert [n for n, _ in restarted.objects()].count(NEW) == 1 and (NEW, "an orange box") in restarted.objects()
    entry = read_registry(model_dir).get(NEW)
    assert entry.n_shots == 10 and restarted.model_version == f"{first}.r2"
    assert sorted(p.name for p in (model_dir / "objects").iterdir()) == [Path(entry.query).name]  # the old pruned


def test_a_fit_that_fails_validation_is_not_swapped_in(tiny_grasp_model, data, tmp_path, monkeypatch):
    model = GraspFeasibility.from_checkpoint(copy_model(tiny_grasp_model, tmp_path / "model"))
    monkeypatch.setattr("vlkd_ros.inference.learner.ranking_auc", lambda *a: 0.5)  # shots that do not stand out
    before = model.model_version
    job = model.add_object(NEW, _frames(_shots_and_query(data)[0]))
    assert job.wait(120) and job.state == "failed" and "validation failed, nothing changed" in job.message
    assert "(ROC AUC 0.50 < 0.75; zero-shot 0.50)" in job.message
    assert model.model_version == before and NEW not in [n for n, _ in model.objects()]  # listed while it ran only
    assert read_registry(model.model_dir).get(NEW) is None


CHILD = textwrap.dedent("""
    import os, signal, sys, threading
    from dataclasses import replace
    from training.grasp.data import read_view
    from vlkd_ros.inference import GraspFeasibility, learner, state_store
    model_dir, mode, *shots = sys.argv[1:]
    model = GraspFeasibility.from_checkpoint(model_dir)
    if mode == "commit":  # die between writing the object's file and committing the registry
        real = state_store.write_registry
        def dying(root, registry):
            if registry.revision > 0:
                os.kill(os.getpid(), signal.SIGKILL)
            real(root, registry)
        state_store.write_registry = dying
        model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)
    else:  # a fit that runs until the process is killed
        learner.fit_query = lambda *args, **kwargs: threading.Event().wait()
    job = model.add_object("mystery box", [read_view("base_rgb", p) for p in shots])
    while job.progress == 0 and not job.wait(0.01):
        pass
    print("RUNNING", job.state, flush=True)
    job.wait()
    print("FINISHED", job.state, job.message, flush=True)
""")


def test_a_crash_during_add_object_leaves_the_previous_model_serving(tiny_grasp_model, data, tmp_path):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    before = read_registry(model_dir).model_version
    shots = [str(e.images["base_rgb"]) for e in _shots_and_query(data)[0]]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for mode in ("fit", "commit"):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), mode, *shots], env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = child.stdout.readline()
        assert line.startswith("RUNNING"), line + child.stderr.read()
        if mode == "fit":
            child.send_signal(signal.SIGKILL)
        assert child.wait(120) == -signal.SIGKILL, child.stdout.read() + child.stderr.read()
        model = GraspFeasibility.from_checkpoint(model_dir)  # loads, serves, and is the previous model
        assert model.model_version == before
        assert set(model.query(_frames(data.x_id[:2]), ["mystery box"])[0]) == {"mystery box"}
        assert read_registry(model_dir).get("mystery box") is None  # persisted only by a committed job
    assert (model_dir / "objects" / "mystery_box-v0001.safetensors").is_file()  # written, never committed
    _accept_any_fit(model)
    job = model.add_object("mystery box", [read_view("base_rgb", p) for p in shots])
    assert job.wait(120) and job.state == "succeeded", job.message
    assert GraspFeasibility.from_checkpoint(model_dir).model_version == model.model_version != before


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_onnx_is_written_at_export_never_while_loading_and_serves_every_commit(tiny_grasp_model, data, tmp_path,
                                                                              monkeypatch, capsys):
    from vlkd_ros.cli import main as cli

    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    assert (model_dir / onnx_file(read_registry(model_dir).weights_sha256)).is_file()  # train-grasp wrote it
    shutil.rmtree(model_dir / "onnx")
    untouched = _files(model_dir)
    with pytest.raises(ModelDirError, match=rf"backend 'onnx' .*run `vlkd export --model {model_dir}` first"):
        GraspFeasibility.from_checkpoint(model_dir, backend="onnx")
    assert _files(model_dir) == untouched  # loading wrote nothing
    assert cli(["export", "--model", str(model_dir)]) == 0
    exported = model_dir / onnx_file(read_registry(model_dir).weights_sha256)
    assert exported.is_file() and str(exported) in capsys.readouterr().out
    untouched = _files(model_dir)
    torch_model = GraspFeasibility.from_checkpoint(model_dir)
    onnx_model = GraspFeasibility.from_checkpoint(model_dir, backend="onnx")
    assert _files(model_dir) == untouched
    frames, names = _frames(data.x_ood[:4]), ["red circle", NEW, "teapot"]
    for a, b in zip(torch_model.query(frames, names), onnx_model.query(frames, names)):
        for name in names:
            assert a[name]["score"] == pytest.approx(b[name]["score"], abs=1e-5)

    commits = []  # (weights version, revision, is its ONNX on disk) at each registry write

    def committing(root, registry):
        commits.append((registry.weights_version, registry.revision,
                        (root / onnx_file(registry.weights_sha256)).is_file()))
        write_registry(root, registry)

    monkeypatch.setattr("vlkd_ros.inference.state_store.write_registry", committing)
    _accept_any_fit(onnx_model)
    job = onnx_model.add_object(NEW, _frames(_shots_and_query(data)[0]))
    assert job.wait(120) and job.state == "succeeded", job.message
    assert commits[-1] == (0, 1, True)  # the same weights and their export, a new revision
    current = [p.name for p in (model_dir / "onnx").glob("student-*.onnx")]
    assert current == [Path(onnx_file(read_registry(model_dir).weights_sha256)).name] == [exported.name]
    reloaded = GraspFeasibility.from_checkpoint(model_dir, backend="onnx")
    assert reloaded.model_version == onnx_model.model_version
    assert reloaded.query(frames, [NEW])[0][NEW]["score"] == pytest.approx(
        onnx_model.query(frames, [NEW])[0][NEW]["score"], abs=1e-5)

    onnx_model.close()  # releases the model dir's writer lock for the next instance
    torch_model = GraspFeasibility.from_checkpoint(model_dir)  # a torch-backend commit: the same export serves it
    _accept_any_fit(torch_model)
    job = torch_model.add_object("mystery box", _frames(_shots_and_query(data)[0]))
    assert job.wait(120) and job.state == "succeeded", job.message
    assert commits[-1] == (0, 2, True)
    assert GraspFeasibility.from_checkpoint(model_dir, backend="onnx").model_version == torch_model.model_version
    (model_dir / onnx_file(read_registry(model_dir).weights_sha256)).unlink()
    with pytest.raises(ModelDirError, match=r"\(v0-.*\), and nothing exported them; run `vlkd export"):
        GraspFeasibility.from_checkpoint(model_dir, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        GraspFeasibility.from_checkpoint(model_dir, backend="tensorrt")


def test_add_object_through_the_run_dir_writes_only_inside_the_model_dir(tiny_grasp_model, data, tmp_path,
                                                                          monkeypatch):
    run = Path(shutil.copytree(tiny_grasp_model.parent, tmp_path / "run"))  # config.yaml, metrics, checkpoints, model/
    outside = {k: v for k, v in _files(run).items() if not k.startswith("model/")}
    model = GraspFeasibility.from_checkpoint(run)  # a run dir is read through its model/ folder
    assert model.model_dir == run / "model"
    _accept_any_fit(model)
    job = model.add_object(NEW, _frames(_shots_and_query(data)[0]))
    assert job.wait(120) and job.state == "succeeded", job.message
    assert {k: v for k, v in _files(run).items() if not k.startswith("model/")} == outside
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in tiny_grasp_model.parent.iterdir())
    written = {k for k in _files(run / "model")} - set(_files(tiny_grasp_model)) - {".lock"}  # the writer lock
    assert {k.split("/")[0] for k in written} == {"objects"}  # the object's shots and query vector, nothing else
    assert read_registry(run / "model").get(NEW).query


def test_add_object_cli_reports_bad_shots(tiny_grasp_model, data, tmp_path, capsys):
    from vlkd_ros.cli import main as cli

    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    shots = [str(e.images["base_rgb"]) for e in _shots_and_query(data)[0]]
    assert cli(["add-object", "--model", str(model_dir), "--name", NEW, "--images", *shots[:2]]) == 2
    assert "needs at least k=5 shots, got 2" in capsys.readouterr().err
    assert cli(["add-object", "--model", str(model_dir), "--name", NEW, "--images", str(tmp_path / "nope.png")]) == 2
    assert "nope.png does not exist" in capsys.readouterr().err


def test_add_object_cli_measures_the_held_out_gain(tiny_grasp_model, data, tiny_clutter, tmp_path, capsys):
    from vlkd_ros.cli import main as cli

    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    shots, held_out = _shots_and_query(data)
    args = ["add-object", "--model", str(model_dir), "--name", "Orange Square", "--eval-data", str(tiny_clutter),
            "--min-heldout-auc", "0", "--images", *[str(e.images["base_rgb"].parent) for e in shots]]
    assert cli(args) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):out.rindex("}") + 1])
    gain = result["held_out"]
    assert gain["before"]["observations"] == gain["after"]["observations"] == len(held_out)
    assert result["state"] == "succeeded" and result["report"]["heldout_auc"] >= 0
    assert f"held-out 'Orange Square' on {len(held_out)} observations: F1" in out
    assert cli([*args[:4], "teapot", *args[5:]]) == 2
    assert "'teapot' is not an object of" in capsys.readouterr().err
