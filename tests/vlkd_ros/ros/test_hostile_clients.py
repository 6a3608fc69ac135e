"""A hostile client against a real vlkd_perception node over DDS (`vlkd serve` on a tiny model dir, a static
`vlkd sim-camera`, hostile_driver.py, each in its own process): hostile strings, images and shot lists on every
field of every service, mixed with valid queries. Every call is answered, the valid ones succeed, and the
registry and every weights file are byte-identical afterwards; then one valid ~/add_object succeeds and changes
only its own entry, and a second node on the same model dir is refused, naming the first one's pid. Plus the
node's add_object refusals, job listing and cancel, called directly on a node in this process."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_peers import VLKD, finish
from test_perception_node import object_shots, serve_cmd

DRIVER = Path(__file__).with_name("hostile_driver.py")
pytestmark = pytest.mark.ros


def fingerprint(model_dir: Path) -> dict[str, str]:
    files = [model_dir / "registry.json", model_dir / "model.safetensors"] + sorted(
        p for folder in ("weights", "objects", "onnx") for p in (model_dir / folder).glob("*") if p.is_file())
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def static_camera(folder: Path, namespace: str) -> list[str]:
    """`vlkd sim-camera` repeating one frame at 30 Hz: what a camera sees when nothing moves."""
    import random

    from PIL import Image

    from grasp_fixtures import render_scene

    folder.mkdir()
    views, _ = render_scene(["red circle", "blue square"], random.Random(11))
    Image.fromarray(views["base_rgb"]).save(folder / "only.png")
    return [*VLKD, "sim-camera", "--source", "images", "--images", str(folder), "--image-size", "48", "--rate",
            "30", "--topic", f"{namespace}/camera/image_raw"]


HOSTILE_CALLS = 1000  # about 4 s of calls; the test's minute goes to starting two nodes and one real few-shot job


def test_a_hostile_client_changes_nothing_the_node_serves(ros_env, procs, grasp_model_dir: Path,
                                                          tmp_path: Path) -> None:
    env, ns, calls = *ros_env, HOSTILE_CALLS
    before = fingerprint(grasp_model_dir)
    registry = json.loads((grasp_model_dir / "registry.json").read_text())
    known = [o["name"] for o in registry["objects"]]
    # fewshot_min_heldout_auc:=0: the tiny model's features hardly tell its shapes apart, so whether its fit passes
    # the quality check is a coin flip on 5 shots; this test checks the transaction around a job that succeeds (the
    # check's quality on the shipped model: benchmarks/bench_fewshot_queries.py, its refusals: test_fewshot_hook)
    node = procs(serve_cmd(grasp_model_dir, ns, "fewshot_frame_timeout:=2.0", "fewshot_min_heldout_auc:=0.0"), env,
                 "node")
    config = {"node": f"{ns}/vlkd_perception", "known": known, "calls": calls, "in_flight": 8, "seed": calls,
              "model_dir": str(grasp_model_dir), "shots_dir": str(object_shots(tmp_path / "shots", "orange square")),
              "camera_cmd": static_camera(tmp_path / "camera", ns),
              "second_node_cmd": serve_cmd(grasp_model_dir, f"{ns}/second"),
              "second_node": f"{ns}/second/vlkd_perception"}
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(config)], env=env, capture_output=True, text=True,
                          timeout=600)
    c = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            c[row.pop("check")] = row
    (tmp_path / "checks.json").write_text(json.dumps(c, indent=1))
    log = node.output()
    assert proc.returncode == 0, f"driver failed ({proc.returncode}); checks {list(c)}\n{proc.stderr[-3000:]}"
    assert c["services"]["ok"] and c["camera"]["ok"], log[-3000:]

    hostile = c["hostile"]
    print(json.dumps({k: v for k, v in hostile.items() if k != "add_refusals"}))
    assert hostile["answered"] == hostile["sent"] == calls, hostile
    assert hostile["valid_ok"] == hostile["valid"] > calls // 5, hostile["valid_failures"]
    assert set(hostile["add_accepted_kinds"]) <= {"add_take_static"}, hostile  # no hostile shot list got a job
    assert len(hostile["kinds"]) >= 10, hostile["kinds"]
    refusals = " | ".join(hostile["add_refusals"])
    for reason in ("path separator", "U+202E", "near-uniform", "is empty"):
        assert reason in refusals, refusals
    settled = c["jobs_settled"]
    assert settled["ok"] and set(settled["states"]) <= {"failed", "cancelled"}, settled
    if "failed" in settled["states"]:  # the static camera's frame jobs: one distinct view, and why
        assert any("move the object or the camera" in m for m in settled["messages"]), settled["messages"]

    assert c["fingerprint_before"]["files"] == before == c["fingerprint_after_hostile"]["files"]
    assert c["objects_after_hostile"]["names"] == known  # no junk name, no pending entry left
    assert c["objects_after_hostile"]["descriptions"] == [o["description"] for o in registry["objects"]]

    assert c["valid_add"]["accepted"], c["valid_add"]
    assert c["valid_job"]["state"] == "succeeded", c["valid_job"]
    old, new = c["registry"]["before"], c["registry"]["after"]
    assert old == registry
    assert new["objects"][:-1] == old["objects"] and new["objects"][-1]["name"] == "orange square"
    added = new["objects"][-1]
    assert added["description"] == "a small square that is plain orange" and added["query"]
    assert not added["finetuned"] and new["revision"] == old["revision"] + 1
    assert {k for k in new if new[k] != old[k]} == {"objects", "revision"}  # a query vector: the weights stay

    second = c["second_node"]
    assert second["ok"] and not second["accepted"], second
    assert f"is locked by another writer (pid {node.popen.pid} on " in second["message"], second
    assert node.popen.poll() is None, f"node died:\n{log[-3000:]}"
    assert node.stop() == 0
    assert "Traceback" not in node.output(), node.output()[-3000:]


# ----- the node in this process: its add_object refusals, ~/list_jobs and ~/cancel_job ---------------------


def test_add_object_refusals_list_and_cancel(local_node, grasp_model_dir: Path) -> None:
    """Each refusal names the reason before anything is queued; a take_next_frames job is listed, cancelled, and
    the queue is bounded per name and in total."""
    from vlkd_interfaces.srv import AddObject, CancelJob, GetJobStatus, ListJobs

    from vlkd_ros.ros.image_msgs import numpy_to_image

    node = local_node(model_dir=str(grasp_model_dir), max_fewshot_jobs=2)
    assert node.autostart()
    before = fingerprint(grasp_model_dir)

    def add(**fields):
        return finish(node._on_add_object(AddObject.Request(**fields), AddObject.Response()))

    grey = numpy_to_image(np.full((48, 48, 3), 128, np.uint8), "rgb8")
    rng = np.random.default_rng(0)
    noise = [numpy_to_image(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "rgb8") for _ in range(5)]
    bad = numpy_to_image(np.zeros((48, 48, 3), np.uint8), "rgb8")
    bad.encoding = "yuv422"
    cases = [
        (dict(name="../../etc/passwd", take_next_frames=3), "holds the path separator '/'"),
        (dict(name="物体 ☃ \u202e", take_next_frames=3), "U+202E"),
        (dict(name="mug", description="\u202eevil", take_next_frames=3), "description '\\u202eevil' holds a format"),
        (dict(name="mug", take_next_frames=2), "2 frames given; a few-shot job needs at least 3 distinct views "
                                               "(parameter fewshot_min_shots)"),
        (dict(name="mug", images=[grey] * 5), "images[0] is near-uniform"),
        (dict(name="mug", images=noise), "images[0] looks like noise"),
        (dict(name="mug", images=[noise[0], bad, noise[1]]), "images[1]: image: unsupported colour encoding 'yuv422'"),
        (dict(name="mug", take_next_frames=4294967295), "the limit is 50 (parameter max_fewshot_images)"),
    ]
    for fields, reason in cases:
        reply = add(**fields)
        assert not reply.accepted and reason in reply.message, (fields.get("name"), reply.message)
    assert not node._frame_jobs.all() and node._model.jobs() == []

    first = add(name="Test_Gadget", take_next_frames=3)
    assert first.accepted and first.job_id.startswith("frames-"), first.message
    again = add(name="test gadget", take_next_frames=3)
    assert not again.accepted and f"already collecting frames, queued or running ({first.job_id})" in again.message
    mug = add(name="mug", take_next_frames=3)
    assert mug.accepted
    full = add(name="bowl", take_next_frames=3)
    assert not full.accepted and "2 few-shot jobs are collecting frames, queued or running, the most allowed " \
                                 "(parameter max_fewshot_jobs)" in full.message

    listing = node._on_list_jobs(ListJobs.Request(), ListJobs.Response())
    assert listing.names == ["test gadget", "mug"] and listing.states == ["queued", "queued"]
    assert listing.messages[0] == "collecting camera frames: 0/3 distinct"
    cancelled = node._on_cancel_job(CancelJob.Request(job_id=first.job_id), CancelJob.Response())
    assert cancelled.found and cancelled.cancelled and cancelled.state == "cancelled"
    assert cancelled.message == "cancelled while collecting frames; nothing changed"
    status = node._on_get_job_status(GetJobStatus.Request(job_id=first.job_id), GetJobStatus.Response())
    assert status.state == "cancelled"
    twice = node._on_cancel_job(CancelJob.Request(job_id=first.job_id), CancelJob.Response())
    assert twice.found and twice.cancelled  # idempotent
    node._frame_jobs.expire("/camera/image_raw", now=time.monotonic() + 3600)  # the mug job failed: no frames
    late = node._on_cancel_job(CancelJob.Request(job_id=mug.job_id), CancelJob.Response())
    assert late.found and not late.cancelled and late.state == "failed" and "finished already" in late.message
    unknown = node._on_cancel_job(CancelJob.Request(job_id="x" * 5000), CancelJob.Response())
    assert not unknown.found and len(unknown.message) < 200
    assert add(name="bowl", take_next_frames=3).accepted  # the cancelled job freed its slot
    assert fingerprint(grasp_model_dir) == before
