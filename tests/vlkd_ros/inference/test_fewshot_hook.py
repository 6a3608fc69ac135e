"""GraspFeasibility's few-shot hook against bad or careless callers: every refusal comes before a job and says why,
nothing is persisted unless a job succeeds (registry and weights byte-identical otherwise), a success changes only
its own object's answers (a query vector; the weights and every other object's scores bit-identical), a bounded
queue with listing and cancel, one writer per model dir (the lock names the other holder), and remove_object, which
undoes what add_object taught and nothing else."""
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from grasp_fixtures import copy_model
from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_formats.dir_lock import DirLockedError
from vlkd_formats.errors import VlkdError
from vlkd_formats.object_registry import read_registry
from vlkd_ros.inference import GraspFeasibility
from vlkd_ros.inference import learner as grasp_module
from vlkd_ros.inference.grasp import FewShotError, JobQueueFull, NotRemovable

pytestmark = pytest.mark.usefixtures("torch_single_thread")
REPO = Path(__file__).resolve().parents[3]
NEW = "orange square"


@pytest.fixture(scope="module")
def shots(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    return [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood
            if NEW in e.objects and e.objects[NEW].graspable][:5]


@pytest.fixture
def model_dir(tiny_grasp_model, tmp_path):
    return copy_model(tiny_grasp_model, tmp_path / "model")


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of the registry and of every weights, shots and ONNX file: what a model dir serves."""
    files = [root / "registry.json", root / "model.safetensors"] + sorted(
        p for folder in ("weights", "objects", "onnx") for p in (root / folder).glob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def hold_jobs(monkeypatch):
    """Jobs that wait, before their fit, until one of the given model's running jobs is asked to cancel (a cancel
    then lands at the step after the fit); until the test ends, or the given patcher's context does."""
    def hold(model: GraspFeasibility, patcher: pytest.MonkeyPatch = monkeypatch) -> None:
        fit = grasp_module.fit_query

        def held(*args, **kwargs):
            while not any(j.cancel_requested for j in model.jobs() if j.state == "running"):
                time.sleep(0.01)
            return fit(*args, **kwargs)
        patcher.setattr(grasp_module, "fit_query", held)
    return hold


def test_every_bad_call_is_refused_before_a_job_and_changes_nothing(model_dir, shots):
    model = GraspFeasibility.from_checkpoint(model_dir)
    before, objects = fingerprint(model_dir), model.objects()
    grey = np.full((480, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cases = [
        (dict(name="../../etc/passwd"), "holds the path separator '/'"),
        (dict(name="物体 ☃ \u202e"), r"holds a format character \(bidi override, zero-width, ...\), U\+202E"),
        (dict(name="ob\x00ject"), r"holds a control character, U\+0000 at position 2"),
        (dict(name="red circle", description="a\x00b"), r"description 'a\\x00b' holds a control character"),
        (dict(name="red circle", description="x" * 501), "at most 500 are allowed"),
        (dict(images=[grey] * 5), r"image\[0\] is near-uniform .*\(and 4 more refused\); no few-shot job"),
        (dict(images=[noise] * 5), r"image\[0\] looks like noise, not a camera image"),
        (dict(images=shots[:4] + [grey]), r"image\[4\] is near-uniform"),
        (dict(images=[shots[0]] * 5), r"only 1 of the 5 shots are distinct views .*move the object or the camera"),
        (dict(images=shots[:2] + [shots[0], shots[1], shots[0]]), "only 2 of the 5 shots are distinct views"),
        (dict(images=[s[:10, :10] for s in shots]), r"image\[0\] is 10x10 pixels, too small"),
        (dict(images=[s.astype(np.float32) for s in shots]), "must be an HxWx3 uint8"),
        (dict(images=shots, k=1), "k must be an integer >= 2"),
        (dict(images=shots[:3]), "needs at least k=5 shots, got 3"),
        (dict(rois=[(0, 0, 10, 10)] * 4), r"rois must give one region \(or None\) per image: 5 image\(s\)"),
        (dict(rois=[(0, 0, 10, 10)] * 4 + [(5, 5, 5, 9)]), r"roi 4 \(5, 5, 5, 9\) is not a box with x_min < x_max"),
        (dict(rois=[None] * 4 + [(0, 0, "a", 1)]), "roi 4 must be 4 numbers"),
        (dict(rois=[None] * 4 + [(-20, -20, -1, -1)]), "roi 4 .* lies outside the centre square"),
    ]
    for kwargs, reason in cases:
        call = {"name": "red circle", "images": shots, **kwargs}
        with pytest.raises(ValueError, match=reason):
            model.add_object(call.pop("name"), call.pop("images"), **call)
    assert model.jobs() == [] and model.objects() == objects
    assert fingerprint(model_dir) == before and not (model_dir / ".lock").exists()


def test_a_new_name_is_listed_while_its_job_runs_and_persisted_only_on_success(model_dir, shots, hold_jobs):
    model = GraspFeasibility.from_checkpoint(model_dir)
    before = fingerprint(model_dir)
    hold_jobs(model)
    job = model.add_object(NEW, shots, description="a small square that is plain orange")
    assert job.message == "queued: 5 distinct shots" and job.shots == 5
    assert (NEW, "a small square that is plain orange") in model.objects()  # answerable zero-shot, described
    assert model.query(shots[0], [NEW])[0][NEW]["score"] >= 0
    assert read_registry(model_dir).get(NEW) is None and fingerprint(model_dir) == before
    assert (model_dir / ".lock").is_file()  # the writer lock, held from the first job on
    while job.progress == 0 and not job.wait(0.05):
        pass
    assert model.cancel(job.job_id) is job and job.state == "cancelled", job
    assert job.message == "cancelled while it ran; nothing changed"
    assert NEW not in [n for n, _ in model.objects()] and fingerprint(model_dir) == before


def test_an_update_changes_nothing_unless_its_job_succeeds(model_dir, shots, hold_jobs, monkeypatch):
    """A re-add of a known object with a new description: cancelled, or failing validation, it leaves the stored
    description, threshold, shots and weights; succeeding, it changes only its own entry and answers (the weights
    and every other object's scores bit-identical); an empty description keeps the stored one."""
    model = GraspFeasibility.from_checkpoint(model_dir)
    old = read_registry(model_dir)
    stored = old.get("red circle")
    others = [n for n in old.names() if n != "red circle"]
    answers = model.query(shots, others)
    before = fingerprint(model_dir)
    with monkeypatch.context() as patch:
        hold_jobs(model, patch)
        job = model.add_object("Red_Circle", shots, description="overwritten?")
        assert model.objects() == [(o.name, o.description) for o in old.objects]  # the old description serves
        model.cancel(job.job_id)
        assert job.state == "cancelled" and fingerprint(model_dir) == before

    with monkeypatch.context() as patch:  # held-out shots that do not stand out: a validation failure
        patch.setattr(grasp_module, "ranking_auc", lambda *a: 0.5)
        job = model.add_object("red circle", shots, description="overwritten?")
        assert job.wait(120) and job.state == "failed" and "validation failed, nothing changed" in job.message
        assert read_registry(model_dir).get("red circle") == stored and fingerprint(model_dir) == before

    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # the update must succeed whatever the tiny model
    job = model.add_object("red circle", shots, description="")
    assert job.wait(120) and job.state == "succeeded", job.message
    after = read_registry(model_dir)
    entry = after.get("red circle")
    assert entry.description == stored.description and entry.query and entry.n_shots == 5 and not entry.finetuned
    assert [o for o in after.objects if o.name != "red circle"] == [o for o in old.objects if o.name != "red circle"]
    assert (after.weights, after.weights_sha256) == (old.weights, old.weights_sha256)
    assert after.model_version == f"{old.model_version}.r1" == model.model_version
    assert model.query(shots, others) == answers  # every other object's scores bit-identical
    assert GraspFeasibility.from_checkpoint(model_dir).query(shots, others) == answers


def test_the_queue_is_bounded_per_name_and_in_total_and_jobs_can_be_listed_and_cancelled(model_dir, shots,
                                                                                         hold_jobs):
    model = GraspFeasibility.from_checkpoint(model_dir)
    before = fingerprint(model_dir)
    hold_jobs(model)
    model.max_jobs = 2
    first = model.add_object(NEW, shots)
    with pytest.raises(JobQueueFull, match=rf"1 few-shot job\(s\) for '{NEW}' already queued or running "
                                           rf"\({first.job_id}; at most 1 per name\): wait for it or cancel it"):
        model.add_object(NEW.upper(), shots)
    second = model.add_object("mystery box", shots)
    with pytest.raises(JobQueueFull, match=r"2 few-shot jobs are queued or running, the most allowed \(2\)"):
        model.add_object("teapot", shots)
    assert [j.job_id for j in model.jobs()] == [first.job_id, second.job_id]
    assert model.job(second.job_id).state == "queued"
    assert model.cancel(second.job_id) is second and second.state == "cancelled"
    assert second.message == "cancelled before it started; nothing changed" and second.wait(0)
    third = model.add_object("teapot", shots)  # a slot is free again
    assert model.cancel("nope") is None
    for job in (first, third):
        model.cancel(job.job_id)
        assert job.wait(60) and job.state == "cancelled", job
    assert model.cancel(first.job_id) is first  # finished: returned unchanged
    assert [n for n, _ in model.objects()] == [n for n, _ in GraspFeasibility.from_checkpoint(model_dir).objects()]
    assert fingerprint(model_dir) == before
    model.close()



def taught(model: GraspFeasibility, shots, name: str = NEW) -> None:
    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # whatever the tiny model makes of the shots
    job = model.add_object(name, shots)
    assert job.wait(120) and job.state == "succeeded", job.message


def test_a_taught_object_is_removed_and_every_other_answer_stays_bit_identical(model_dir, shots):
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
    assert reloaded.model_version == version
    assert reloaded.query(shots, others + [NEW]) == model.query(shots, others + [NEW])
    model.close()


def test_a_refused_removal_changes_nothing(model_dir, shots, hold_jobs):
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
    with pytest.MonkeyPatch.context() as patch:
        hold_jobs(model, patch)
        job = model.add_object(NEW, shots)
        with pytest.raises(NotRemovable, match=rf"cannot remove '{NEW}': few-shot job {job.job_id} is learning it"):
            model.remove_object(NEW)
        assert model.cancel(job.job_id).wait(60) and job.state == "cancelled"
    model.close()

    other, holder = GraspFeasibility.from_checkpoint(model_dir), GraspFeasibility.from_checkpoint(model_dir)
    holder.fewshot = replace(holder.fewshot, min_heldout_auc=2.0)  # refused by the job: it fails, holding the lock
    assert holder.add_object("teapot", shots).wait(120)
    with pytest.raises(DirLockedError, match="locked by another writer"):
        other.remove_object(NEW)
    assert fingerprint(model_dir) == before and model.model_version == other.model_version == version
    holder.close()
    assert other.remove_object(NEW) != version
    other.close()

CHILD = textwrap.dedent("""
    import sys, threading
    from training.grasp.data import read_view
    from vlkd_ros.inference import GraspFeasibility, learner as grasp
    grasp.fit_query = lambda *args, **kwargs: threading.Event().wait()  # a job that holds the lock until killed
    model_dir, *shots = sys.argv[1:]
    model = GraspFeasibility.from_checkpoint(model_dir)
    job = model.add_object("mystery box", [read_view("base_rgb", p) for p in shots])
    print("HOLDING", flush=True)
    job.wait()
""")


def test_one_writer_per_model_dir(model_dir, shots, tiny_clutter):
    """Two instances (or two processes) serving one model dir for writing: the second is refused naming the
    first's pid; after the first closes, an instance that loaded the dir before the first committed is refused
    too (it would write over that commit), and one loaded afterwards may write."""
    first, stale = GraspFeasibility.from_checkpoint(model_dir), GraspFeasibility.from_checkpoint(model_dir)
    first.fewshot = replace(first.fewshot, min_heldout_auc=0.0)  # whatever the tiny model makes of the shots
    job = first.add_object(NEW, shots)
    with pytest.raises(DirLockedError, match=rf"{model_dir} is locked by another writer \(pid {os.getpid()} \(this "
                                             r"process\) on .*, a few-shot learner, since"):
        stale.add_object("mystery box", shots)
    assert job.wait(120) and job.state == "succeeded", job.message
    first.close()
    with pytest.raises(FewShotError, match=r"registry.json changed since this instance loaded it \(now v0-.*\.r1, "
                                           r"serving v0-\w+\): another writer committed"):
        stale.add_object("mystery box", shots)
    fresh = GraspFeasibility.from_checkpoint(model_dir)
    assert fresh.add_object("mystery box", shots).wait(120)
    fresh.close()

    paths = [str(e) for e in sorted((tiny_clutter / "episodes").glob("*/base_rgb.png"))[40:45]]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), *paths], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("HOLDING"), line + child.stderr.read()
        other = GraspFeasibility.from_checkpoint(model_dir)
        with pytest.raises(DirLockedError, match=rf"pid {child.pid} on .*, a few-shot learner"):
            other.add_object(NEW, shots)
    finally:
        child.kill()
        child.wait(30)
    deadline = time.monotonic() + 10
    while True:  # the kernel dropped the dead child's lock
        try:
            other.add_object("teapot", shots)
            break
        except DirLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    other.close()
