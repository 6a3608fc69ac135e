"""The node's queries share one embedding per observation: `vlkd serve` on the tiny model dir and a client process
(query_driver.py) publishing frames of its own over DDS; then the node in this process, its weights swapped by a
few-shot commit. Batched (~/query_objects) and single (~/is_graspable) answers agree, every answer names the
judged frame's stamp and the model version, a new frame or new weights are embedded anew, stale frames refused."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ros_peers import ROOT, VLKD, finish, parse_checks

DRIVER = Path(__file__).with_name("query_driver.py")
PARAMS = ROOT / "config" / "perception.yaml"
DRIVER_TIMEOUT_S = 150

pytestmark = pytest.mark.ros


def drive(env: dict, config: dict) -> dict:
    """Run query_driver.py; return its checks by name."""
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(config)], env=env, capture_output=True,
                          text=True, timeout=DRIVER_TIMEOUT_S)
    checks = parse_checks(proc.stdout)
    assert proc.returncode == 0, f"driver failed ({proc.returncode}); checks {list(checks)}\n{proc.stderr[-3000:]}"
    return checks


def test_queries_share_one_embedding_per_frame(ros_env, procs, grasp_model_dir: Path, tmp_path: Path) -> None:
    """One embedding per frame for ~30 single, flooded and batched queries; batch scores are the single ones; a
    new frame is embedded once more; request images, refusals and a stale frame are answered as such."""
    from vlkd_ros.inference import GraspFeasibility

    env, ns = ros_env
    model = GraspFeasibility.from_checkpoint(grasp_model_dir)
    known, version = [name for name, _ in model.objects()], model.model_version
    topic = f"{ns}/camera/image_raw"
    node = procs([*VLKD, "serve", "--params", str(PARAMS), "--model-dir", str(grasp_model_dir), "--camera-topic",
                  topic, "--ros-args", "-r", f"__ns:={ns}", "-p", "diagnostics_period:=0.2"], env, "node")
    c = drive(env, {"node": f"{ns}/vlkd_perception", "topic": topic, "known": known})
    (tmp_path / "checks.json").write_text(json.dumps(c, indent=1))
    log = node.output()
    assert c["services"]["ok"], log
    assert c["no_limit"]["result"][0] and c["listing"]["model_version"] == version

    first = c["first_frame"]
    assert c["frame_shown"]["ok"] and first["stamp"][0] > 0
    names = [*known, "flying saucer"]
    singles, batch = first["singles"], first["batch"]
    for name, reply in singles.items():
        assert reply["success"] and reply["stamp"] == first["stamp"] and reply["model_version"] == version, reply
    assert "zero-shot" in singles["flying saucer"]["message"] and "zero-shot" not in singles[known[0]]["message"]
    assert batch["success"] and batch["names"] == names and batch["stamp"] == first["stamp"], batch
    assert batch["model_version"] == version and "'flying saucer' not in the registry" in batch["message"]
    for name, score, graspable in zip(batch["names"], batch["scores"], batch["graspable"]):
        assert score == pytest.approx(singles[name]["score"], abs=1e-6) and graspable == singles[name]["graspable"]
    assert len(first["flooded"]) == 24 and all(r["success"] and r["stamp"] == first["stamp"]
                                               for r in first["flooded"])
    for r in first["flooded"]:
        assert r["score"] == pytest.approx(singles[r["name"]]["score"], abs=1e-6)
    every = first["every"]
    assert every["success"] and every["names"] == known and every["scores"] == batch["scores"][:len(known)]

    before, after = first["before"], first["after"]
    assert before["embeddings_computed"] == 1, before  # the frame, embedded once while it was being shown
    assert after["embeddings_computed"] == 1, after  # ... and never again for the 31 questions about it
    assert after["embedding_cache_hits"] + after["embedding_fallbacks"] - before["embedding_cache_hits"] \
        - before["embedding_fallbacks"] >= len(names) + 24 + 2, (before, after)

    second = c["second_frame"]
    assert second["stamp"] != first["stamp"] and second["counts"]["embeddings_computed"] == 2, second
    assert second["batch"]["stamp"] == second["single"]["stamp"] == second["stamp"]
    assert second["batch"]["scores"][0] == pytest.approx(second["single"]["score"], abs=1e-6)
    assert second["batch"]["scores"] != batch["scores"]  # another frame, other scores

    request = c["request_image"]
    assert request["single"]["success"] and request["single"]["stamp"] == [42, 7]
    assert request["single"]["message"] == "request image, 80x64 rgb8"
    assert request["batch"]["success"] and request["batch"]["stamp"] == [42, 7]
    assert request["batch"]["model_version"] == request["single"]["model_version"] == version
    assert request["batch"]["scores"][0] == pytest.approx(request["single"]["score"], abs=1e-6)
    assert request["batch"]["scores"] == pytest.approx(batch["scores"], abs=1e-6)  # the first frame's pixels

    assert not c["empty_name"]["success"] and "object_names[1] empty" in c["empty_name"]["message"]
    assert c["empty_name"]["names"] == [] and c["empty_name"]["scores"] == []
    assert not c["bad_name"]["success"] and "object name '?!' has no letters or digits" in c["bad_name"]["message"]
    assert c["set_known_only"]["result"][0] and c["unset_known_only"]["result"][0]
    assert not c["unknown"]["success"] and "unknown object 'flying saucer'" in c["unknown"]["message"]

    assert c["set_max_frame_age"]["result"][0]
    for stale in (c["stale_single"], c["stale_batch"]):
        assert not stale["success"] and "older than max_frame_age 0.50 s" in stale["message"], stale
        assert stale["stamp"] == second["stamp"]  # the refused frame is named
    assert node.popen.poll() is None and node.stop() == 0
    assert "Traceback" not in node.output(), node.output()[-3000:]


# ----- the node in this process: a few-shot commit swaps the weights -------------------------------------------


def wait_for(predicate, timeout: float) -> bool:
    """Poll `predicate` until true or `timeout` s passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_new_model_version_is_a_new_embedding(local_node, grasp_model_dir: Path) -> None:
    """The same frame is embedded once per model version: after a few-shot commit the next answer comes from the
    new version (its model_version), embedded anew, and every known object's answer is bit-identical; a new frame is embedded anew (by the first query that needs
    it, prefetch_rate 0, or by the prefetch thread ahead of the queries); a request image bypasses the cache."""
    from grasp_fixtures import render_scene
    from vlkd_interfaces.srv import IsGraspable, QueryObjects
    from vlkd_ros.ros.diagnostics import report_values
    from vlkd_ros.ros.image_msgs import numpy_to_image

    node = local_node(model_dir=str(grasp_model_dir), max_frame_age=0.0, results_rate=0.0, prefetch_rate=0.0)
    assert node.autostart()
    model, counts = node._model, lambda: report_values(node.report())["embeddings_computed"]
    rng = np.random.default_rng(1)
    frame = numpy_to_image(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "rgb8", "camera")
    frame.header.stamp.sec, frame.header.stamp.nanosec = 1000, 5
    node._on_image(frame)
    names = [name for name, _ in model.objects()]

    def ask_all() -> QueryObjects.Response:
        return finish(node.queries.on_query_objects(QueryObjects.Request(object_names=names),
                                                    QueryObjects.Response()))

    first = ask_all()
    assert first.success and (first.frame_stamp.sec, first.frame_stamp.nanosec) == (1000, 5)
    assert first.model_version == model.model_version and counts() == 1
    single = finish(node.queries.on_is_graspable(IsGraspable.Request(object_name=names[0]),
                                                 IsGraspable.Response()))
    assert single.success and single.model_version == first.model_version and counts() == 1
    request = IsGraspable.Request(object_name=names[0])
    request.image = frame
    by_request = finish(node.queries.on_is_graspable(request, IsGraspable.Response()))
    assert by_request.score == pytest.approx(single.score, abs=1e-6)
    assert counts() == 1  # a request image is embedded for its own call, never cached

    model.fewshot = replace(model.fewshot, min_heldout_auc=0.0)  # any fit swaps in: the tiny model's quality aside
    shot_rng = random.Random(3)
    shots = [render_scene(["orange square"], shot_rng)[0]["base_rgb"] for _ in range(5)]
    job = model.add_object("orange square", shots)
    assert job.wait(180) and job.state == "succeeded", job.message
    swapped = ask_all()
    assert swapped.success and swapped.model_version == model.model_version != first.model_version
    assert (swapped.frame_stamp.sec, swapped.frame_stamp.nanosec) == (1000, 5) and counts() == 2
    assert list(swapped.scores) == list(first.scores)  # a query vector added: every known object's answer identical
    assert ask_all().scores == swapped.scores and counts() == 2

    frame.header.stamp.nanosec = 6
    node._on_image(frame)
    assert ask_all().frame_stamp.nanosec == 6 and counts() == 3

    from rclpy.parameter import Parameter

    node.set_parameters([Parameter("prefetch_rate", value=30.0)])  # eager: queries answer what is embedded
    newer = numpy_to_image(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "rgb8", "camera")
    newer.header.stamp.sec = 1001
    node._on_image(newer)  # wakes the prefetch thread (queried within the last second)
    assert wait_for(lambda: counts() == 4, 30.0), counts()
    assert ask_all().frame_stamp.sec == 1001 and counts() == 4
    assert report_values(node.report())["embedding_fallbacks"] == 0


def test_the_executor_answers_while_a_model_worker_embeds(local_node, grasp_model_dir: Path, monkeypatch) -> None:
    """The node's one executor thread never runs the model: while a request image is embedded on a model worker
    (held at a gate here), latest-frame queries are answered from the cached embedding; the held call answers once
    the gate opens."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from vlkd_interfaces.srv import IsGraspable
    from vlkd_ros.ros.image_msgs import numpy_to_image

    node = local_node(model_dir=str(grasp_model_dir), max_frame_age=0.0, results_rate=0.0, prefetch_rate=0.0)
    assert node.autostart()
    model, name = node._model, node._model.objects()[0][0]
    frame = numpy_to_image(np.random.default_rng(4).integers(0, 256, (48, 48, 3), dtype=np.uint8), "rgb8", "camera")
    node._on_image(frame)
    executor = SingleThreadedExecutor(context=node.context)  # what `run` spins the node on
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    peer = rclpy.create_node("executor_test_client", context=node.context)
    peer_executor = SingleThreadedExecutor(context=node.context)
    peer_executor.add_node(peer)
    client = peer.create_client(IsGraspable, f"{node.get_fully_qualified_name()}/is_graspable")
    gate, entered, embed = threading.Event(), threading.Event(), model.embed

    def held(views):
        entered.set()
        gate.wait(60)
        return embed(views)

    def ask(request: IsGraspable.Request, timeout: float = 30.0) -> IsGraspable.Response | None:
        future = client.call_async(request)
        peer_executor.spin_until_future_complete(future, timeout_sec=timeout)
        return future.result()

    try:
        assert client.wait_for_service(timeout_sec=30)
        assert ask(IsGraspable.Request(object_name=name)).success  # embeds the latest frame (prefetch off)
        monkeypatch.setattr(model, "embed", held)
        slow = client.call_async(IsGraspable.Request(object_name=name, image=frame))
        assert entered.wait(30), "the request image never reached a model worker"
        quick = [ask(IsGraspable.Request(object_name=name), timeout=10.0) for _ in range(5)]
        assert all(reply is not None and reply.success for reply in quick), quick
        assert not slow.done()
        gate.set()
        peer_executor.spin_until_future_complete(slow, timeout_sec=30)
        assert slow.done() and slow.result().success and slow.result().message.startswith("request image")
    finally:
        gate.set()
        peer_executor.shutdown()
        peer.destroy_node()
        executor.shutdown(timeout_sec=10)
        executor.remove_node(node)
