"""Client process for test_perception_node.py: drives a running vlkd_perception node through its services over DDS.

Usage: python node_driver.py SCENARIO CONFIG_JSON. Prints one JSON line per check ({"check": ..., ...}); the
test asserts on them. Scenarios: `reliability` (errors, 4K, a 30 Hz camera + few-shot job + 200 queries,
stale frame, run-time parameters, lifecycle), `rgbd` (a four-view model, its missing topics fixed through the
lifecycle) and `sim` (answers about sim-camera frames).
CONFIG_JSON: {"node": "/vlkd_perception", "known": [...], "camera_cmd": [...], "camera_topic": "..."}.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vlkd_interfaces.msg import GraspResult
from vlkd_interfaces.srv import AddObject, GetJobStatus, ListObjects
from vlkd_ros.ros.client import PerceptionClient, interrupt
from vlkd_ros.ros.image_msgs import numpy_to_image


def emit(check: str, **fields) -> None:
    """Print one result line."""
    print(json.dumps({"check": check, **fields}), flush=True)


class Driver(PerceptionClient):
    """The library client plus parameter and lifecycle services and the node's result and debug topics."""

    def __init__(self, node_name: str) -> None:
        super().__init__(node_name, "vlkd_test_driver")
        self.params = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        self.lifecycle = self.node.create_client(ChangeState, f"{node_name}/change_state")
        self.results: list[GraspResult] = []
        self.debug_images: list = []
        self.node.create_subscription(Image, f"{node_name}/debug_image", self.debug_images.append, 1)
        self.node.create_subscription(GraspResult, f"{node_name}/results", self.results.append,
                                      QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def wait_for_services(self, timeout: float, extra: tuple = ()) -> bool:
        """Wait until every service of the node, parameters and lifecycle included, is discovered."""
        return super().wait_for_services(timeout, (self.params, self.lifecycle, *extra))

    def set_param(self, name: str, value) -> tuple[bool, str]:
        """Set one parameter through the node's parameter service."""
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
        reply = self.call(self.params, SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
        return bool(reply.results[0].successful), reply.results[0].reason

    def transition(self, transition_id: int) -> bool:
        """Ask the node for a lifecycle transition."""
        request = ChangeState.Request()
        request.transition.id = transition_id
        reply = self.call(self.lifecycle, request, timeout=60.0)
        return bool(reply and reply.success)


def reply_fields(reply) -> dict:
    """The IsGraspable reply as a dict (or a timeout marker)."""
    if reply is None:
        return {"answered": False}
    return {"answered": True, "success": reply.success, "graspable": reply.graspable, "score": reply.score,
            "stamp": [reply.frame_stamp.sec, reply.frame_stamp.nanosec], "message": reply.message}


def wait_until(predicate, timeout: float, period: float = 0.2) -> bool:
    """Poll predicate until true or timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return False


def start_camera(cmd: list[str]) -> subprocess.Popen:
    """Start the camera publisher process."""
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stress(d: Driver, names: list[str], total: int, in_flight: int, hooks: dict | None = None) -> dict:
    """`total` IsGraspable calls with up to `in_flight` outstanding; the functions in hooks[i] run before call i."""
    start = time.monotonic()
    results = d.flood(names, total, in_flight, hooks)
    rtts = sorted(r[2] for r in results)
    return {"sent": total, "answered": len(results), "seconds": round(time.monotonic() - start, 2),
            "ok": sum(1 for _, r, _ in results if r.success),
            "errors": sorted({r.message.split(";")[0] for _, r, _ in results if not r.success}),
            "ok_names": sorted({n for n, r, _ in results if r.success}),
            "p50_ms": round(1000 * float(np.percentile(rtts, 50)), 1) if rtts else None,
            "p95_ms": round(1000 * float(np.percentile(rtts, 95)), 1) if rtts else None}


class JobWatch:
    """Starts an images AddObject during the stress and samples job states without blocking it."""

    def __init__(self, d: Driver, shots: list, frames_job: str) -> None:
        self.d, self.shots, self.ids = d, shots, [frames_job]
        self.states: list[tuple[str, str]] = []
        self.added: dict = {}

    def add_from_images(self) -> None:
        """AddObject with example images (the given-images path), answered asynchronously."""
        request = AddObject.Request(name="green triangle", description="a small green triangle", images=self.shots)

        def done(f) -> None:
            reply = f.result()
            self.added = {"accepted": reply.accepted, "job_id": reply.job_id, "message": reply.message}
            if reply.accepted:
                self.ids.append(reply.job_id)

        self.d.add.call_async(request).add_done_callback(done)

    def sample(self) -> None:
        """Ask for every job's state; the replies land in self.states."""
        for job_id in list(self.ids):
            self.d.job.call_async(GetJobStatus.Request(job_id=job_id)).add_done_callback(
                lambda f, job_id=job_id: self.states.append((job_id, f.result().state)))


def load_shots(folder: str) -> list:
    """The PNG files of a folder as rgb8 Image messages."""
    from PIL import Image as PILImage

    return [numpy_to_image(np.asarray(PILImage.open(p).convert("RGB")), "rgb8")
            for p in sorted(Path(folder).glob("*.png"))]


def reliability(d: Driver, cfg: dict) -> None:
    """The reliability scenario of the issue; every step prints one check line."""
    known = cfg["known"]
    first = d.ask(known[0])  # asked while the node autostarts: answered once the model load lets it
    emit("starting", **reply_fields(first))
    wait_until(lambda: "not active" not in ((r := d.ask(known[0], timeout=5.0)) and r.message or "not active"), 120.0)
    emit("no_frame", **reply_fields(d.ask(known[0])))

    camera = start_camera(cfg["camera_cmd"])
    got = wait_until(lambda: (r := d.ask(known[0], timeout=5.0)) is not None and r.success, 40.0, 0.3)
    emit("camera_frame", ok=got, **reply_fields(d.ask(known[0])))
    emit("unknown_zero_shot", **reply_fields(d.ask("flying saucer")))
    emit("set_known_only", result=list(d.set_param("known_objects_only", True)))
    emit("unknown", **reply_fields(d.ask("flying saucer")))
    emit("unset_known_only", result=list(d.set_param("known_objects_only", False)))
    emit("empty_name", **reply_fields(d.ask("  ")))

    rgb = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    img = numpy_to_image(rgb, "rgb8", "test")
    img.header.stamp.sec, img.header.stamp.nanosec = 42, 7
    emit("request_image", **reply_fields(d.ask(known[0], img)))
    bad = numpy_to_image(rgb, "rgb8")
    bad.encoding = "yuv422"
    emit("wrong_encoding", **reply_fields(d.ask(known[0], bad)))
    short = numpy_to_image(rgb, "rgb8")
    short.data = bytes(short.data)[: len(short.data) // 2]
    emit("wrong_size", **reply_fields(d.ask(known[0], short)))
    huge = numpy_to_image(np.full((2160, 3840, 3), 128, np.uint8), "bgr8")
    t0 = time.perf_counter()
    emit("frame_4k", seconds=round(time.perf_counter() - t0, 2), **reply_fields(d.ask(known[0], huge)))

    new_name = "test gadget"
    reply = d.call(d.add, AddObject.Request(name=new_name, description="a small test gadget", take_next_frames=5))
    emit("add_object", accepted=bool(reply and reply.accepted), job_id=reply.job_id if reply else "",
         message=reply.message if reply else "timeout")
    job_id = reply.job_id if reply else ""
    refused = d.call(d.add, AddObject.Request(name="", take_next_frames=3))
    emit("add_object_refused", accepted=bool(refused and refused.accepted), message=refused.message if refused else "")

    # 200 queries while the camera streams at 30 Hz and few-shot jobs run (frames job + an images job at call 20).
    watch = JobWatch(d, load_shots(cfg["shots_dir"]), job_id)
    hooks = {i: [watch.sample] for i in range(0, 200, 10)}
    hooks[20].insert(0, watch.add_from_images)
    emit("stress", **stress(d, [*known, new_name, "flying saucer"], 200, 8, hooks))
    emit("add_object_images", **watch.added)
    emit("job_states_during_stress", states=watch.states)

    def jobs_done() -> bool:
        replies = [d.call(d.job, GetJobStatus.Request(job_id=j)) for j in watch.ids]
        return all(r is not None and r.state in ("succeeded", "failed") for r in replies)

    finished = wait_until(jobs_done, 90.0, 0.5)
    for name, job in zip(("job", "job_images"), watch.ids):
        status = d.call(d.job, GetJobStatus.Request(job_id=job))
        emit(name, finished=finished, found=status.found, state=status.state, progress=status.progress,
             message=status.message)
    emit("job_unknown", found=d.call(d.job, GetJobStatus.Request(job_id="nope")).found)
    listing = d.call(d.list, ListObjects.Request())
    emit("list_objects", names=list(listing.names), descriptions=list(listing.descriptions),
         model_version=listing.model_version)
    emit("after_job", **reply_fields(d.ask(new_name)))
    seen = len(d.diagnostics)
    wait_until(lambda: len(d.diagnostics) > seen, 5.0)  # one published after all the calls above
    emit("diagnostics", count=len(d.diagnostics), last=d.diagnostics[-1] if d.diagnostics else {})
    emit("results", count=len(d.results),
         multi=sum(1 for r in d.results if len(r.names) > 1),
         model_versions=sorted({r.model_version for r in d.results}))

    emit("set_debug_image", result=list(d.set_param("publish_debug_image", True)))
    got = wait_until(lambda: len(d.debug_images) > 0, 5.0)
    first = d.debug_images[0] if got else None
    emit("debug_image", ok=got, encoding=first.encoding if first else "", width=first.width if first else 0)

    camera_err = interrupt(camera, 10.0)
    emit("camera_stopped", stderr_tail=camera_err[-500:])
    time.sleep(1.6)
    emit("stale", **reply_fields(d.ask(known[0])))
    emit("set_max_frame_age", result=list(d.set_param("max_frame_age", 0.0)))
    emit("stale_allowed", **reply_fields(d.ask(known[0])))
    emit("set_threshold_0", result=list(d.set_param("threshold", 0.0)))
    emit("threshold_0", **reply_fields(d.ask(known[0])))
    emit("set_threshold_bad", result=list(d.set_param("threshold", 1.5)))
    emit("set_model_dir_active", result=list(d.set_param("model_dir", "/elsewhere")))

    emit("deactivate", ok=d.transition(Transition.TRANSITION_DEACTIVATE))
    emit("inactive_query", **reply_fields(d.ask(known[0])))
    emit("activate", ok=d.transition(Transition.TRANSITION_ACTIVATE))
    emit("reactivated_query", **reply_fields(d.ask(known[0], img)))
    emit("reactivated_list", names=list(d.call(d.list, ListObjects.Request()).names))


def rgbd(d: Driver, cfg: dict) -> None:
    """An RGB-D (base + wrist) model started without the wrist topics: fix them through the lifecycle, then
    judge replayed four-view frames and learn from the next frames."""
    known = cfg["known"]
    wait_until(lambda: bool(d.diagnostics) and d.diagnostics[-1]["level"] == 2, 120.0)  # autostart has failed
    emit("not_activated", **reply_fields(d.ask(known[0])))
    emit("diagnostics_error", last=d.diagnostics[-1] if d.diagnostics else {})
    emit("cleanup", ok=d.transition(Transition.TRANSITION_CLEANUP))
    for name, topic in cfg["set_topics"].items():
        emit(f"set_{name}", result=list(d.set_param(name, topic)))
    emit("configure", ok=d.transition(Transition.TRANSITION_CONFIGURE))
    emit("activate", ok=d.transition(Transition.TRANSITION_ACTIVATE))

    camera = start_camera(cfg["camera_cmd"])
    got = wait_until(lambda: (r := d.ask(known[0], timeout=5.0)) is not None and r.success, 40.0, 0.3)
    emit("rgbd_answer", ok=got, **reply_fields(d.ask(known[-1])))
    rgb = np.zeros((48, 64, 3), np.uint8)
    emit("request_image_refused", **reply_fields(d.ask(known[0], numpy_to_image(rgb, "rgb8"))))
    reply = d.call(d.add, AddObject.Request(name="test gadget", take_next_frames=3))
    emit("add_object", accepted=bool(reply and reply.accepted), message=reply.message if reply else "timeout")

    def job_done() -> bool:
        status = d.call(d.job, GetJobStatus.Request(job_id=reply.job_id))
        return status is not None and status.state in ("succeeded", "failed")

    finished = wait_until(job_done, 90.0, 0.5)
    status = d.call(d.job, GetJobStatus.Request(job_id=reply.job_id))
    emit("job", finished=finished, state=status.state, message=status.message)
    emit("camera_stopped", stderr_tail=interrupt(camera, 10.0)[-500:])


def sim(d: Driver, cfg: dict) -> None:
    """Start the sim camera, wait for a frame, ask about every known object."""
    camera = start_camera(cfg["camera_cmd"])
    known = cfg["known"]
    got = wait_until(lambda: (r := d.ask(known[0], timeout=5.0)) is not None and r.success, 90.0, 0.5)
    answers = {name: reply_fields(d.ask(name)) for name in known}
    emit("sim_answers", ok=got, answers=answers)
    emit("camera_stopped", stderr_tail=interrupt(camera, 10.0)[-500:])


def run_scenario(scenario, cfg: dict) -> int:
    """Wait for the node's services, then run `scenario(driver, cfg)`; exit status 3 when they never appear."""
    rclpy.init()
    d = Driver(cfg.get("node", "/vlkd_perception"))
    try:
        if not d.wait_for_services(90.0):
            emit("services", ok=False)
            return 3
        emit("services", ok=True)
        scenario(d, cfg)
        return 0
    finally:
        d.close()
        rclpy.try_shutdown()


def main() -> int:
    """Run one scenario."""
    name, cfg = sys.argv[1], json.loads(sys.argv[2])
    return run_scenario({"reliability": reliability, "rgbd": rgbd, "sim": sim}[name], cfg)


if __name__ == "__main__":
    sys.exit(main())
