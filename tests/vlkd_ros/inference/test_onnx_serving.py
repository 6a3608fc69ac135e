"""Serving without the trainer: a process that loads a grasp model with backend "onnx", answers, learns an object
(add_object) and removes it imports neither torch nor `training` nor `sim`, and its answers (trained, zero-shot and
learnt names, locations included) equal backend torch's on the same frames within 1e-5."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_ros.inference import GraspFeasibility

pytestmark = pytest.mark.usefixtures("torch_single_thread")
REPO = Path(__file__).resolve().parents[3]
NEW = "orange square"
TRAINER = ("torch", "training", "sim")

CHILD = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    from vlkd_formats.image_codec import read_rgb
    from vlkd_ros.inference import GraspFeasibility
    model_dir, (names, shots, frames) = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
    model = GraspFeasibility.from_checkpoint(model_dir, backend="onnx")
    frames = [read_rgb(p) for p in frames]
    before = model.query(frames, names)
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # whatever the tiny model makes of the shots
    job = model.add_object("{new}", [read_rgb(p) for p in shots])
    assert job.wait(120) and job.state == "succeeded", job.message
    learnt = model.query(frames, names)
    model.add_object("mystery box", [read_rgb(p) for p in shots]).wait(120)
    removed = model.remove_object("mystery box")
    model.close()
    trainer = sorted(m for m in sys.modules if m.split(".")[0] in {trainer})
    print(json.dumps({{"trainer": trainer, "before": before, "learnt": learnt, "version": model.model_version,
                      "removed": removed}}))
""").format(new=NEW, trainer=repr(set(TRAINER)))


def close(a: list[dict], b: list[dict], tol: float = 1e-5) -> float:
    """The largest difference of scores and locations between two query results; fails on a different decision."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            assert x[name]["graspable"] == y[name]["graspable"] or abs(x[name]["score"] - y[name]["score"]) < tol
            worst = max(worst, abs(x[name]["score"] - y[name]["score"]))
            if "location" in x[name]:
                worst = max([worst] + [abs(p - q) for p, q in zip(x[name]["location"]["box"],
                                                                  y[name]["location"]["box"])])
    return worst


@pytest.mark.parametrize("fixture", ["tiny_grasp_model", "tiny_dense_grasp_model", "tiny_detector_grasp_model"])
def test_an_onnx_serving_process_never_imports_the_trainer_and_answers_as_torch(fixture, request, tiny_clutter,
                                                                                 tmp_path):
    model_dir = copy_model(request.getfixturevalue(fixture), tmp_path / "model")
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    shots = [str(e.images["base_rgb"]) for e in data.x_ood if NEW in e.objects and e.objects[NEW].graspable][:5]
    frames = [str(e.images["base_rgb"]) for e in data.x_ood[-6:]]
    names = [n for n, _ in GraspFeasibility.from_checkpoint(model_dir).objects()] + [NEW, "a teapot"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), json.dumps(names), json.dumps(shots),
                            json.dumps(frames)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["trainer"] == []
    assert out["removed"] == out["version"] and out["version"].endswith(".r3")

    torch_model = GraspFeasibility.from_checkpoint(model_dir, backend="torch")  # serves NEW as the child learnt it
    images = [read_view("base_rgb", p) for p in frames]
    assert torch_model.model_version == out["version"]
    assert close(out["learnt"], torch_model.query(images, names)) < 1e-5
    for a, b in zip(out["before"], out["learnt"], strict=True):  # only the learnt name's answers changed
        assert {n: a[n] for n in names if n != NEW} == {n: b[n] for n in names if n != NEW}
