"""A state dir overlays a read-only model dir: few-shot learning writes only there (the model dir stays
byte-identical), a fresh load with it serves what was learnt, one without it does not, and a state dir of another
model is refused. The shipped default model is found through one function (VLKD_DEFAULT_MODEL_DIR in tests) and
learns into a per-user state dir."""
import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_formats.object_registry import read_registry
from vlkd_formats.state_dir import StateDirError, read_state_card
from vlkd_ros.inference import GraspFeasibility, default_model_dir
from vlkd_ros.inference.model_paths import DEFAULT_MODEL_ENV, NoDefaultModelError

pytestmark = pytest.mark.usefixtures("torch_single_thread")
NEW = "orange square"


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root` (tests run as root, whom chmod does not stop: hashes show what changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def chmod_tree(root: Path, writable: bool) -> None:
    """chmod -R a-w (or u+w back) of `root`."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only_model(tiny_grasp_model, tmp_path):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    chmod_tree(model_dir, writable=False)
    yield model_dir
    chmod_tree(model_dir, writable=True)


def test_a_read_only_model_dir_learns_into_its_state_dir(read_only_model, tiny_clutter, tiny_rgbd_grasp_model,
                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    shots = [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood
             if NEW in e.objects and e.objects[NEW].graspable][:5]
    frame = read_view("base_rgb", data.x_ood[-1].images["base_rgb"])
    before, state = tree_hashes(read_only_model), tmp_path / "state"

    model = GraspFeasibility.from_checkpoint(read_only_model, backend="onnx", state_dir=state)
    assert (model.model_dir, model.state_dir) == (read_only_model, state)
    assert not state.exists()  # loading wrote nothing
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # the tiny model's fit quality is not the point
    job = model.add_object(NEW, shots, description="a small square that is plain orange")
    assert job.wait(300) and job.state == "succeeded", job.message
    assert NEW in [n for n, _ in model.objects()] and model.model_version.endswith(".r1")
    learnt = model.query(frame, [NEW])[0][NEW]
    model.close()
    assert tree_hashes(read_only_model) == before
    written = tree_hashes(state)
    assert {k.split("/")[0] for k in written} == {"state.json", "registry.json", "objects", ".lock"}
    base = read_registry(read_only_model)
    card = read_state_card(state)
    assert card.model == read_only_model.parent.name  # a folder named model/ is named by its run dir
    assert (card.base_weights_sha256, card.base_model_version) == (base.weights_sha256, base.model_version)

    again = GraspFeasibility.from_checkpoint(read_only_model, backend="onnx", state_dir=state)
    assert again.model_version == model.model_version and again.threshold_for(NEW) == model.threshold_for(NEW)
    assert again.query(frame, [NEW])[0][NEW]["score"] == pytest.approx(learnt["score"], abs=1e-5)
    plain = GraspFeasibility.from_checkpoint(read_only_model)  # its own (default or in-place) state: not that one
    assert NEW not in [n for n, _ in plain.objects()] and plain.model_version == base.model_version
    with pytest.raises(StateDirError, match=rf"state dir {state} belongs to another model \('{card.model}', "
                                            "weights v0-"):
        GraspFeasibility.from_checkpoint(tiny_rgbd_grasp_model, state_dir=state)
    with pytest.raises(StateDirError, match="holds a registry.json but no state.json: it is not a state dir"):
        GraspFeasibility.from_checkpoint(read_only_model, state_dir=tiny_rgbd_grasp_model)
    assert tree_hashes(read_only_model) == before and tree_hashes(state) == written


def test_the_default_model_is_found_in_one_place_and_learns_into_a_per_user_state_dir(tiny_grasp_model, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(tmp_path / "missing"))
    with pytest.raises(NoDefaultModelError, match=r"no model dir given, and the default grasp model is not installed "
                                                  rf"\({tmp_path / 'missing' / 'model.json'} not found\): pass "
                                                  r"--model-dir PATH .* or set the node parameter model_dir"):
        GraspFeasibility.from_checkpoint()
    shipped = copy_model(tiny_grasp_model, tmp_path / "grasp_default")
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(shipped))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_model_dir() == shipped
    model = GraspFeasibility.from_checkpoint()
    sha8 = read_registry(shipped).weights_sha256[:8]
    assert model.model_dir == shipped and model.state_dir == tmp_path / "xdg" / "vlkd_ros" / f"grasp_default-{sha8}"
    assert GraspFeasibility.from_checkpoint(shipped).state_dir == model.state_dir  # the same dir named explicitly
    assert GraspFeasibility.from_checkpoint(tiny_grasp_model.parent).state_dir is None  # a user's own dir: in place
    if os.geteuid() != 0:  # root may write anywhere, so only another user sees a read-only dir as one
        read_only = copy_model(tiny_grasp_model, tmp_path / "read_only")
        chmod_tree(read_only, writable=False)
        try:
            assert GraspFeasibility.from_checkpoint(read_only).state_dir.parent == tmp_path / "xdg" / "vlkd_ros"
        finally:
            chmod_tree(read_only, writable=True)


def test_add_object_cli_takes_a_state_dir_and_names_the_missing_default_model(tmp_path, monkeypatch, capsys):
    from vlkd_ros.cli import main as cli

    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(tmp_path / "missing"))
    assert cli(["add-object", "--name", NEW, "--state-dir", str(tmp_path / "s"), "--images", "a.png"]) == 2
    err = capsys.readouterr().err
    assert "vlkd add-object: error: no model dir given, and the default grasp model is not installed" in err
