"""GraspFeasibility.remove_object: an object taught by add_object is forgotten (registry revision + 1, its objects/
file gone, the name answered zero-shot again, every other object's answers bit-identical, in this instance and
after a reload); an unknown name, a trained object or a name a job is learning is refused with nothing changed."""
import hashlib
import time
from dataclasses import replace
from pathlib import Path

import pytest

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_formats.dir_lock import DirLockedError
from vlkd_formats.errors import VlkdError
from vlkd_formats.object_registry import read_registry
from vlkd_ros.inference import GraspFeasibility
from vlkd_ros.inference import learner as grasp_module
from vlkd_ros.inference.grasp import NotRemovable

pytestmark = pytest.mark.usefixtures("torch_single_thread")
NEW = "orange square"


@pytest.fixture(scope="module")
def shots(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    return [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood
            if NEW in e.objects and e.objects[NEW].graspable][:5]


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every file of the dir but the writer lock."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def taught(model: GraspFeasibility, shots, name: str = NEW) -> None:
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # whatever the tiny model makes of the shots
    job = model.add_object(name, shots)
    assert job.wait(120) and job.state == "succeeded", job.message


def test_a_taught_object_is_removed_and_every_other_answer_stays_bit_identical(tiny_grasp_model, tmp_path, shots):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    model = GraspFeasibility.from_checkpoint(model_dir)
    names = [n for n, _ in model.objects()]
    zero_shot = model.query(shots, [NEW])
    taught(model, shots, "mystery box")
    taught(model, shots)
    others = names + ["mystery box"]
    answers = model.query(shots, others)
    added = read_registry(model_dir)
    assert added.model_version.endswith(".r2") and (model_dir / added.get(NEW).query).is_file()

    version = model.remove_object("Orange_Square")
    after = read_registry(model_dir)
    assert version == model.model_version == after.model_version == added.model_version[:-1] + "3"
    assert after.get(NEW) is None and after.objects == tuple(o for o in added.objects if o.name != NEW)
    assert not (model_dir / added.get(NEW).query).exists() and (model_dir / after.get("mystery box").query).is_file()
    assert [n for n, _ in model.objects()] == others
    assert model.query(shots, others) == answers  # bit-identical
    assert model.query(shots, [NEW]) == zero_shot  # the name is answered as before it was taught
    reloaded = GraspFeasibility.from_checkpoint(model_dir)
    assert reloaded.model_version == version and reloaded.query(shots, others + [NEW]) == model.query(
        shots, others + [NEW])
    model.close()


def test_a_refused_removal_changes_nothing(tiny_grasp_model, tmp_path, shots, monkeypatch):
    model_dir = copy_model(tiny_grasp_model, tmp_path / "model")
    model = GraspFeasibility.from_checkpoint(model_dir)
    taught(model, shots)
    before, version = fingerprint(model_dir), model.model_version
    with pytest.raises(NotRemovable, match=r"cannot remove 'teapot': the model knows no such object \(objects added "
                                           rf"with add_object: '{NEW}'\)"):
        model.remove_object("teapot")
    with pytest.raises(NotRemovable, match="cannot remove 'red circle': the model was trained on it"):
        model.remove_object("Red Circle")
    with pytest.raises(ValueError, match="holds the path separator"):
        model.remove_object("../" + NEW)
    assert issubclass(NotRemovable, VlkdError)

    fit = grasp_module.fit_query

    def held(*args, **kwargs):  # a job that waits in its fit until it is asked to cancel
        while not any(j.cancel_requested for j in model.jobs()):
            time.sleep(0.01)
        return fit(*args, **kwargs)
    monkeypatch.setattr(grasp_module, "fit_query", held)
    job = model.add_object(NEW, shots)
    with pytest.raises(NotRemovable, match=rf"cannot remove '{NEW}': few-shot job {job.job_id} is learning it"):
        model.remove_object(NEW)
    assert model.cancel(job.job_id).wait(60) and job.state == "cancelled"
    model.close()

    other = GraspFeasibility.from_checkpoint(model_dir)
    holder = GraspFeasibility.from_checkpoint(model_dir)
    holder.fewshot = replace(holder.fewshot, min_heldout_auc=2.0)
    assert holder.add_object("teapot", shots).wait(120)  # a failed job; the writer lock stays with `holder`
    with pytest.raises(DirLockedError, match="locked by another writer"):
        other.remove_object(NEW)
    assert fingerprint(model_dir) == before and model.model_version == other.model_version == version
    holder.close()
    assert other.remove_object(NEW) != version
    other.close()
