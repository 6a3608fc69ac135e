"""Client process for test_node_queries.py: publishes camera frames of its own and asks a running vlkd_perception
node about them over DDS (~/is_graspable, ~/query_objects), reading the embedding counters on /diagnostics.

Usage: python query_driver.py CONFIG_JSON with {"node": ..., "topic": ..., "known": [...]}. Prints one JSON line
per check ({"check": ..., ...}); the test asserts on them.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from node_driver import Driver, emit, reply_fields, run_scenario, wait_until
from vlkd_interfaces.srv import ListObjects
from vlkd_ros.ros.image_msgs import numpy_to_image


def many_fields(reply) -> dict:
    """A QueryObjects reply as a dict (or a timeout marker)."""
    if reply is None:
        return {"answered": False}
    return {"answered": True, "success": reply.success, "message": reply.message, "names": list(reply.names),
            "scores": [float(s) for s in reply.scores], "graspable": [bool(g) for g in reply.graspable],
            "stamp": [reply.frame_stamp.sec, reply.frame_stamp.nanosec], "model_version": reply.model_version}


def single_fields(reply) -> dict:
    """An IsGraspable reply as a dict, with its model version."""
    return {**reply_fields(reply), "model_version": reply.model_version if reply is not None else ""}


def diagnostics_after(d: Driver, since: float, timeout: float = 10.0) -> dict:
    """The first /diagnostics status of the node that arrived after `since` (monotonic)."""
    wait_until(lambda: any(s["time"] > since for s in d.diagnostics), timeout, 0.05)
    return next((s for s in d.diagnostics if s["time"] > since), {})


def embeddings(status: dict) -> dict:
    """The embedding counters of a /diagnostics status."""
    return {k: int(status.get(k, -1)) for k in ("embeddings_computed", "embedding_cache_hits",
                                                 "embedding_fallbacks", "queries_total")}


def show(d: Driver, pub, rgb: np.ndarray, name: str, timeout: float = 30.0) -> list[int]:
    """Publish one frame (stamped now) until the node answers about it; its stamp [sec, nanosec]."""
    msg = numpy_to_image(rgb, "rgb8", "camera", d.node.get_clock().now().to_msg())
    stamp = [msg.header.stamp.sec, msg.header.stamp.nanosec]

    def judged() -> bool:
        pub.publish(msg)  # the same message again (same stamp: the same observation for the node)
        reply = d.ask(name, timeout=5.0)
        return reply is not None and reply.success and [reply.frame_stamp.sec, reply.frame_stamp.nanosec] == stamp

    emit("frame_shown", ok=wait_until(judged, timeout, 0.1), stamp=stamp)
    return stamp


def scenario(d: Driver, cfg: dict) -> None:
    """Two frames of our own, many single and batched questions about each, request images, refusals, staleness."""
    known = cfg["known"]
    names = [*known, "flying saucer"]  # the registry's objects and one zero-shot name
    pub = d.node.create_publisher(Image, cfg["topic"], QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                                  reliability=ReliabilityPolicy.BEST_EFFORT))
    emit("no_limit", result=list(d.set_param("max_frame_age", 0.0)))
    # asked while the node autostarts: the model version is listed once it is active
    wait_until(lambda: bool((r := d.call(d.list, ListObjects.Request(), 5.0)) and r.model_version), 120.0)
    version = d.call(d.list, ListObjects.Request()).model_version
    emit("listing", model_version=version)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(2)]

    stamp = show(d, pub, frames[0], known[0])
    before = embeddings(diagnostics_after(d, time.monotonic()))
    singles = {name: single_fields(d.ask(name)) for name in names}
    flooded = d.flood(names, 24, 8)  # 24 more, 8 in flight
    batch = many_fields(d.ask_many(names))
    every = many_fields(d.ask_many([]))
    after = embeddings(diagnostics_after(d, time.monotonic()))
    emit("first_frame", stamp=stamp, singles=singles, batch=batch, every=every, before=before, after=after,
         flooded=[{"name": n, **single_fields(r)} for n, r, _ in flooded])

    stamp2 = show(d, pub, frames[1], known[0])
    batch2 = many_fields(d.ask_many(names))
    single2 = single_fields(d.ask(known[0]))
    emit("second_frame", stamp=stamp2, batch=batch2, single=single2,
         counts=embeddings(diagnostics_after(d, time.monotonic())))

    img = numpy_to_image(frames[0], "rgb8", "request")
    img.header.stamp.sec, img.header.stamp.nanosec = 42, 7
    emit("request_image", single=single_fields(d.ask(known[0], img)), batch=many_fields(d.ask_many(names, img)))
    emit("empty_name", **many_fields(d.ask_many([known[0], "  "])))
    emit("bad_name", **many_fields(d.ask_many([known[0], "?!"])))
    emit("set_known_only", result=list(d.set_param("known_objects_only", True)))
    emit("unknown", **many_fields(d.ask_many([known[0], "flying saucer"])))
    emit("unset_known_only", result=list(d.set_param("known_objects_only", False)))

    emit("set_max_frame_age", result=list(d.set_param("max_frame_age", 0.5)))
    time.sleep(1.0)
    emit("stale_single", **single_fields(d.ask(known[0])))
    emit("stale_batch", **many_fields(d.ask_many(names)))


def main() -> int:
    """Run the scenario."""
    return run_scenario(scenario, json.loads(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
