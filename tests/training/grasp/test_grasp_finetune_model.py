"""`vlkd finetune-grasp`: the offline weight finetune writes a new, complete model dir that a node loads and that
answers the new name, or, when a guard refuses or the input is bad, nothing at all (exit 2, one line); the input
model dir is never changed; detector models are sent to `vlkd add-object`."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from training.grasp.data import GraspDataConfig, load_clutter_data
from training.grasp.finetune_model import FINETUNES
from training.grasp.model_dir import load_grasp_model_dir
from vlkd_formats.image_codec import read_rgb
from vlkd_formats.model_dir import onnx_file
from vlkd_formats.object_registry import read_registry
from vlkd_ros.cli import main as cli
from vlkd_ros.inference import GraspFeasibility
from vlkd_ros.inference.model_paths import SHIPPED_MODEL_DIR

pytestmark = pytest.mark.usefixtures("torch_single_thread")
NEW = "green triangle"
PERMISSIVE = ["--max-drop", "1", "--min-heldout-auc", "0", "--min-control-gap", "-1"]  # every guard measured, none
# refuses: what the tiny model learns from 2 steps is no test of the guards' limits


@pytest.fixture(scope="module")
def shot_dirs(tiny_clutter) -> list[str]:
    """Episode folders of 5 scenes with the OOD object NEW graspable in them."""
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    return [str(Path(e.images["base_rgb"]).parent) for e in data.x_ood
            if NEW in e.objects and e.objects[NEW].graspable][:5]


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_finetune_writes_a_new_model_dir_a_node_serves_and_leaves_the_input_unchanged(tiny_grasp_model, shot_dirs,
                                                                                         tmp_path, capsys):
    folder = tmp_path / "shots"  # a folder of RGB images per name
    folder.mkdir()
    for i, episode in enumerate(shot_dirs):
        shutil.copy(Path(episode) / "base_rgb.png", folder / f"{i}.png")
    before = fingerprint(tiny_grasp_model)
    out = tmp_path / "models" / "new"
    assert cli(["finetune-grasp", str(tiny_grasp_model), "--name", NEW.title(), "--shots", str(folder),
                "--out", str(out), "--steps", "2", *PERMISSIVE]) == 0
    assert f"finetuned model dir: {out}" in capsys.readouterr().out
    assert fingerprint(tiny_grasp_model) == before
    assert [p.name for p in out.parent.iterdir()] == ["new"]  # no partial dir left beside it

    gm = load_grasp_model_dir(out)  # the validating loader takes it
    entry = gm.registry.get(NEW)
    assert (entry.source, entry.finetuned, entry.n_shots, entry.query) == ("added", True, 5, None)
    assert entry.threshold is not None and (out / entry.shots).is_file()
    assert [o for o in gm.registry.objects if o.name != NEW] == list(read_registry(tiny_grasp_model).objects)
    assert gm.registry.weights_sha256 != read_registry(tiny_grasp_model).weights_sha256
    assert (out / onnx_file(gm.registry.weights_sha256)).is_file()
    record = json.loads((out / "model.json").read_text())["info"][FINETUNES][-1]
    assert record["added"] == {NEW: {"shots": 5, "held_out": 1}} and record["settings"]["steps"] == 2
    assert set(record["figures"]["known"]) == {"old_auc", "new_auc", "held_out_frames"}
    assert set(record["figures"]["objects"][NEW]) == {"held_out_shots", "held_out_score", "held_out_auc",
                                                      "control_gap"}

    # As a node loads its model_dir on configure (backend onnx): the new object is listed and answered at its own
    # threshold, as backend torch answers it.
    frames = [read_rgb(Path(e) / "base_rgb.png") for e in shot_dirs]
    onnx = GraspFeasibility.from_checkpoint(out, backend="onnx", threads=1)
    assert (NEW, "") in onnx.objects() and onnx.threshold_for(NEW) == entry.threshold
    answers = onnx.query(frames, [NEW, "red circle"])
    torch_answers = GraspFeasibility.from_checkpoint(out).query(frames, [NEW, "red circle"])
    for a, b in zip(answers, torch_answers):
        assert 0 <= a[NEW]["score"] <= 1 and abs(a[NEW]["score"] - b[NEW]["score"]) < 1e-4


def test_a_guard_refusal_writes_nothing(tiny_grasp_model, shot_dirs, tmp_path, capsys):
    before = fingerprint(tiny_grasp_model)
    out = tmp_path / "new"
    # Scores are sigmoids in (0, 1): no shot scores a whole 1 above a copy of itself.
    assert cli(["finetune-grasp", str(tiny_grasp_model), "--name", NEW, "--shots", *shot_dirs, "--out", str(out),
                "--steps", "2", "--max-drop", "1", "--min-heldout-auc", "0", "--min-control-gap", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the finetune's progress bar
    assert err.startswith("vlkd finetune-grasp: error: ") and f"{out} was not written" in err
    assert f"the held-out shots of {NEW!r} score only" in err and "min_control_gap=1)" in err
    assert list(tmp_path.iterdir()) == [] and fingerprint(tiny_grasp_model) == before


def test_bad_input_ends_with_one_line_and_exit_2(tiny_grasp_model, shot_dirs, tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    base = ["finetune-grasp", str(tiny_grasp_model), "--name", NEW, "--shots", *shot_dirs]
    shots_out = ["--name", NEW, "--shots", *shot_dirs, "--out", str(tmp_path / "new")]
    cases = [
        (["finetune-grasp", str(tmp_path / "nowhere"), *shots_out], "does not exist"),
        (["finetune-grasp", str(SHIPPED_MODEL_DIR), *shots_out],
         "is a detector model, whose new objects are query vectors, not finetuned weights: use `vlkd add-object` "
         "or the node's AddObject action instead"),
        (["finetune-grasp", str(tiny_grasp_model), "--name", NEW, "--shots", str(tmp_path / "none.png"), "--out",
          str(tmp_path / "new")], "none.png does not exist"),
        ([*base, "--out", str(existing)], "already exists"),
        ([*base, "--out", str(tiny_grasp_model / "inside")], "which a finetune never changes"),
        (["finetune-grasp", str(tiny_grasp_model), "--name", "red circle", "--shots", *shot_dirs, "--out",
          str(tmp_path / "new")], "already known to"),
        (["finetune-grasp", str(tiny_grasp_model), "--name", NEW, "--shots", shot_dirs[0], "--out",
          str(tmp_path / "new")], "needs at least 2 shots"),
        ([*base, "--name", "blue box", "--out", str(tmp_path / "new")], "give one --shots list after each --name"),
        ([*base, "lr=0.1", "--out", str(tmp_path / "new")], "came after --shots and were read as shots"),
    ]
    for argv, reason in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
