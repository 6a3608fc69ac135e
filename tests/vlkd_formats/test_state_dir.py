"""The state dir format: its card, the per-user default location, which dir's files are read, and refusals of a
dir that belongs to another model or is no state dir."""
import pytest

from vlkd_formats.object_registry import ObjectRegistry, write_registry
from vlkd_formats.state_dir import (ModelFiles, StateCard, StateDirError, check_state_dir, default_state_dir,
                                    model_name, read_state_card, write_state_card)

SHA = "ab" * 32
CARD = StateCard("grasp_default", SHA, "v0-abababab")


def test_the_default_state_dir_is_per_user_per_model_and_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir("grasp_default", SHA) == tmp_path / "xdg" / "vlkd_ros" / "grasp_default-abababab"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir("My Model!", SHA) == tmp_path / "home/.local/state/vlkd_ros/my_model-abababab"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir("m", SHA).parent == tmp_path / "home/.local/state/vlkd_ros"


def test_a_model_is_named_by_its_folder_or_its_run_dir(tmp_path):
    assert model_name(tmp_path / "grasp_default") == "grasp_default"
    assert model_name(tmp_path / "offline run" / "model") == "offline_run"


def test_files_are_read_from_the_state_dir_when_there_else_from_the_model_dir(tmp_path):
    root, state = tmp_path / "model", tmp_path / "state"
    for folder in (root / "weights", state / "weights"):
        folder.mkdir(parents=True)
    (root / "weights" / "v0001.safetensors").write_text("base")
    (state / "weights" / "v0002.safetensors").write_text("added")
    write_registry(root, ObjectRegistry())
    files = ModelFiles(root, state)
    assert files.writable == state and files.registry_dir() == root  # nothing committed to the state dir yet
    assert files.path("weights/v0001.safetensors") == root / "weights" / "v0001.safetensors"
    assert files.path("weights/v0002.safetensors") == state / "weights" / "v0002.safetensors"
    write_registry(state, ObjectRegistry())
    assert files.registry_dir() == state
    in_place = ModelFiles(root)
    assert in_place.writable == root and in_place.registry_dir() == root
    assert in_place.path("weights/v0002.safetensors") == root / "weights" / "v0002.safetensors"


def test_a_state_dir_of_another_model_or_no_state_dir_is_refused(tmp_path):
    state, model = tmp_path / "state", tmp_path / "model"
    check_state_dir(state, model, CARD)  # absent: nothing there yet
    state.mkdir()
    check_state_dir(state, model, CARD)  # empty
    assert read_state_card(state) is None
    write_state_card(state, CARD)
    assert read_state_card(state) == CARD
    check_state_dir(state, model, CARD)
    other = StateCard("other", "cd" * 32, "v3-cdcdcdcd")
    with pytest.raises(StateDirError, match=rf"state dir {state} belongs to another model \('grasp_default', "
                                            rf"weights v0-abababab, sha256 abababababababab...\), not to {model} "
                                            r"\(v3-cdcdcdcd, sha256 cdcdcdcdcdcdcdcd...\): give this model its own"):
        check_state_dir(state, model, other)
    (state / "state.json").write_text('{"format": "vlkd-state", "version": 7, "model": "m", '
                                      '"base_weights_sha256": "", "base_model_version": ""}')
    with pytest.raises(StateDirError, match="format 'vlkd-state' v7 is not 'vlkd-state' v1"):
        check_state_dir(state, model, CARD)
    (state / "state.json").write_text("{")
    with pytest.raises(StateDirError, match="is not a valid state card"):
        check_state_dir(state, model, CARD)
    (state / "state.json").unlink()
    write_registry(state, ObjectRegistry())  # e.g. a model dir given as the state dir
    with pytest.raises(StateDirError, match="holds a registry.json but no state.json: it is not a state dir"):
        check_state_dir(state, model, CARD)

