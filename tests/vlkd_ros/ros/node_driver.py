"""Client process for test_perception_node.py: drives a running vlkd_perception node through its services and its
~/add_object action over DDS.

Usage: python node_driver.py SCENARIO CONFIG_JSON. Prints one JSON line per check ({"check": ..., ...}); the
test asserts on them. Scenarios: `reliability` (errors, 4K, a 30 Hz camera + few-shot goals + 200 queries,
stale frame, run-time parameters, lifecycle), `rgbd` (a four-view model, its missing topics fixed through the
lifecycle), `learn` (AddObject goals: images with rois, feedback, refusals, cancels) and `sim` (answers about
sim-camera frames, an object learnt from its next frames).
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
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest

from vlkd_interfaces.action import AddObject
from vlkd_interfaces.msg import GraspResult
from vlkd_interfaces.srv import ListObjects, RemoveObject
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


STATUS = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_ABORTED: "aborted",
          GoalStatus.STATUS_CANCELED: "canceled"}


class Goal:
    """One ~/add_object goal sent without blocking: its feedback as it comes, its end once asked for."""

    def __init__(self, d: Driver, goal: AddObject.Goal) -> None:
        self.d, self.feedback, self.handle = d, [], None
        self.accepted: bool | None = None
        d.learn.send_goal_async(goal, feedback_callback=self._on_feedback).add_done_callback(self._on_response)

    def _on_feedback(self, msg) -> None:
        fb = msg.feedback
        self.feedback.append({"stage": fb.stage, "progress": round(float(fb.progress), 3),
                              "distinct_frames": int(fb.distinct_frames)})

    def _on_response(self, future) -> None:
        self.handle = future.result()
        self.accepted = bool(self.handle.accepted)

    def end(self, timeout: float = 90.0) -> dict:
        """Wait for the goal's end: {"status": succeeded | aborted | canceled | timeout, "success", "message",
        "model_version", "feedback": [...]}."""
        wait_until(lambda: self.accepted is not None, timeout, 0.05)
        done = self.d.result(self.handle, timeout) if self.accepted else None
        if done is None:
            return {"status": "timeout" if self.accepted is None else f"accepted {self.accepted}",
                    "feedback": self.feedback}
        status, result = done
        return {"status": STATUS.get(status, str(status)), "success": result.success, "message": result.message,
                "model_version": result.model_version, "feedback": list(self.feedback)}

    def cancel(self) -> dict:
        """Cancel the goal; the cancel response's code and the goals it cancels."""
        wait_until(lambda: self.accepted is not None, 30.0, 0.05)
        reply = self.d.cancel(self.handle)
        return {"answered": reply is not None, "code": int(reply.return_code) if reply else -1,
                "canceling": len(reply.goals_canceling) if reply else 0}


def load_shots(folder: str) -> list:
    """The PNG files of a folder as rgb8 Image messages."""
    from PIL import Image as PILImage

    return [numpy_to_image(np.asarray(PILImage.open(p).convert("RGB")), "rgb8")
            for p in sorted(Path(folder).glob("*.png"))]


def load_rois(folder: str) -> list[RegionOfInterest]:
    """The folder's rois.json (inclusive boxes, one per shot) as RegionOfInterest messages."""
    return [RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)
            for x0, y0, x1, y1 in json.loads((Path(folder) / "rois.json").read_text())]


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
    frames_goal = Goal(d, AddObject.Goal(name=new_name, description="a small test gadget", take_next_frames=5))
    emit("add_object_refused", **Goal(d, AddObject.Goal(name="", take_next_frames=3)).end())

    # 200 queries while the camera streams at 30 Hz and few-shot goals run (next frames + images at call 20).
    goals = [frames_goal]
    shots = load_shots(cfg["shots_dir"])
    hooks = {20: [lambda: goals.append(Goal(d, AddObject.Goal(name="green triangle", images=shots,
                                                              description="a small green triangle")))]}
    emit("stress", **stress(d, [*known, new_name, "flying saucer"], 200, 8, hooks))
    emit("feedback_during_stress", stages=sorted({f["stage"] for g in goals for f in g.feedback}))
    for name, goal in zip(("job", "job_images"), goals):
        emit(name, accepted=goal.accepted, **goal.end())
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
    emit("job", **Goal(d, AddObject.Goal(name="test gadget", take_next_frames=3)).end())
    emit("camera_stopped", stderr_tail=interrupt(camera, 10.0)[-500:])


def learn(d: Driver, cfg: dict) -> None:
    """AddObject goals on a node without a camera: images with rois (feedback, result, listed after), refusals
    (aborted, saying why), a take_next_frames goal cancelled while it collects, an images goal cancelled while it
    runs (cancelled, or succeeded when the cancel came after its commit); then ~/remove_object undoes the learnt
    object and refuses the others."""
    wait_until(lambda: (r := d.call(d.list, ListObjects.Request(), 5.0)) is not None and r.model_version, 120.0)
    shots, rois = load_shots(cfg["shots_dir"]), load_rois(cfg["shots_dir"])
    goal = AddObject.Goal(name="Green Triangle", description="a small green triangle", images=shots, rois=rois)
    emit("images_rois", **Goal(d, goal).end())
    listing = d.call(d.list, ListObjects.Request())
    emit("listed", names=list(listing.names), descriptions=list(listing.descriptions),
         model_version=listing.model_version)
    emit("rois_mismatch", **Goal(d, AddObject.Goal(name="mug", images=shots, rois=rois[:2])).end())
    outside = [RegionOfInterest(x_offset=40, y_offset=0, width=20, height=10)] + rois[1:]
    emit("roi_outside", **Goal(d, AddObject.Goal(name="mug", images=shots, rois=outside)).end())
    emit("too_few", **Goal(d, AddObject.Goal(name="mug", images=shots[:2])).end())

    waiting = Goal(d, AddObject.Goal(name="purple ring", take_next_frames=3))
    wait_until(lambda: bool(waiting.feedback), 30.0, 0.05)
    emit("collecting_cancel", **waiting.cancel())
    emit("collecting_cancelled", **waiting.end())

    running = Goal(d, AddObject.Goal(name="orange square", images=shots))
    wait_until(lambda: bool(running.feedback), 30.0, 0.01)
    emit("running_cancel", **running.cancel())
    emit("running_cancelled", **running.end())
    emit("listed_after", names=list(d.call(d.list, ListObjects.Request()).names))

    def remove(name: str) -> dict:
        reply = d.call(d.remove, RemoveObject.Request(name=name))
        return {"success": reply.success, "message": reply.message, "model_version": reply.model_version}

    emit("remove_learnt", **remove("GREEN  triangle"))
    listing = d.call(d.list, ListObjects.Request())
    emit("listed_removed", names=list(listing.names), model_version=listing.model_version)
    emit("remove_again", **remove("green triangle"))
    emit("remove_trained", **remove(cfg["known"][0]))
    emit("remove_empty", **remove("  "))


def sim(d: Driver, cfg: dict) -> None:
    """Start the sim camera, wait for a frame, ask about every known object; then learn a new one from its next
    frames (the camera sways, so a still scene gives distinct views)."""
    camera = start_camera(cfg["camera_cmd"])
    known = cfg["known"]
    got = wait_until(lambda: (r := d.ask(known[0], timeout=5.0)) is not None and r.success, 90.0, 0.5)
    answers = {name: reply_fields(d.ask(name)) for name in known}
    emit("sim_answers", ok=got, answers=answers)
    emit("take_next_frames", **Goal(d, AddObject.Goal(name="table clutter", take_next_frames=5)).end(120.0))
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
    return run_scenario({"reliability": reliability, "rgbd": rgbd, "learn": learn, "sim": sim}[name], cfg)


if __name__ == "__main__":
    sys.exit(main())
