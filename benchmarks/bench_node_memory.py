"""Benchmark: the vlkd_perception node's memory over its life, as a user runs it.

Starts `vlkd sim-camera --source images` on the shots dataset's episodes and `vlkd serve` (autostart off, a
temporary --state-dir, so the model dir is never written) as separate processes, drives the lifecycle through the
node's ~/change_state (configure -> activate timed), then sends N ~/add_object goals from this process: 5 shots
each (base_rgb + the object's visible box as sensor_msgs/RegionOfInterest) of one Y_ood object of the model card
per goal (all of them in turn, then again under names "NAME 2", ...), each followed by one ~/query_objects of
every known object on the latest camera frame; then ~/remove_object of every taught name, deactivate and cleanup.
At each step it reads the node process's VmRSS and VmHWM (/proc/PID/status) and whether torch's libraries are
mapped into it (/proc/PID/maps), and checks the issue's goals: RSS <= 300 MB active, flat (+-20 MB) over the jobs,
no torch, configure -> active <= 1.5 s.

    python benchmarks/bench_node_memory.py --out benchmarks/results/node_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_ros_service import VLKD, peer_env, start, wait_ready

GOALS = {"active_rss_mb": 300.0, "jobs_rss_drift_mb": 20.0, "configure_to_active_s": 1.5}
TORCH_LIBRARIES = ("/torch/", "libtorch")  # mapped files of a process that imported torch
NODE = "vlkd_perception"


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process in MB (10^6 bytes), from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) * 1024 / 1e6, 1)  # the kernel's kB are KiB
    return out


def mapped_files(pid: int, words: tuple[str, ...]) -> list[str]:
    """The files mapped into a process (/proc/PID/maps) whose path contains any of `words`."""
    paths = {line.split(maxsplit=5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if len(line.split(maxsplit=5)) == 6}
    return sorted(p for p in paths if any(w in p for w in words))


def rss_by_mapping(pid: int, top: int = 8) -> dict[str, float]:
    """A process's `top` largest RSS shares in MB by what is mapped (a file, [heap], [anon]), from /proc/PID/smaps."""
    sizes: dict[str, int] = {}
    what = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if fields[0].startswith("Rss:"):
            sizes[what] = sizes.get(what, 0) + int(fields[1])
        elif not fields[0].endswith(":"):  # a mapping's header: address range, perms, offset, dev, inode[, path]
            what = fields[5] if len(fields) == 6 else "[anon]"
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(kib * 1024 / 1e6, 1) for name, kib in largest}


def teaching_plan(shots_data: str, model_dir: str, jobs: int, k: int, min_visible: float) -> tuple[list, list]:
    """([(name, images, boxes)] per goal, [Y_ood objects lacking k shots]): the card's Y_ood objects in turn."""
    from bench_fewshot_queries import card_objects_with_shots, pixel_box
    from vlkd_formats.image_codec import read_rgb

    objects, lacking = card_objects_with_shots(shots_data, model_dir, k, min_visible)
    usable = [(name, [read_rgb(e.images["base_rgb"]) for e in episodes],
               [pixel_box(e.objects[name].bbox) for e in episodes]) for name, episodes in objects]
    if not usable:
        raise SystemExit(f"no Y_ood object of the model has {k} shots in {shots_data}")
    plan = []
    for i in range(jobs):  # from the second round on under the names "NAME 2", "NAME 3", ...
        name, images, boxes = usable[i % len(usable)]
        plan.append((name if i < len(usable) else f"{name} {i // len(usable) + 1}", images, boxes))
    return plan, lacking


def add_object_goal(name: str, images: list, boxes: list) -> Any:
    """An AddObject goal of rgb8 images, each with its box (x_min, y_min, x_max, y_max edges) as its ROI."""
    from sensor_msgs.msg import RegionOfInterest

    from vlkd_interfaces.action import AddObject
    from vlkd_ros.ros.image_msgs import numpy_to_image

    rois = [RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0) for x0, y0, x1, y1 in boxes]
    return AddObject.Goal(name=name, images=[numpy_to_image(im, "rgb8") for im in images], rois=rois)


class Lifecycle:
    """The node's standard lifecycle services, called from the benchmark's client node."""

    def __init__(self, client: Any, node: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.client, self.change, self.get = client, ChangeState, GetState
        self.changer = client.node.create_client(ChangeState, f"{node}/change_state")
        self.getter = client.node.create_client(GetState, f"{node}/get_state")

    def wait(self, timeout: float) -> None:
        """Until both services are discovered."""
        for service in (self.changer, self.getter):
            if not service.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"{service.srv_name} did not appear in {timeout} s")

    def state(self) -> str:
        """The node's current lifecycle state label."""
        return self.client.call(self.getter, self.get.Request()).current_state.label

    def transition(self, label: str) -> float:
        """Trigger a transition (configure, activate, deactivate, cleanup); its round trip in s, raising on failure."""
        from lifecycle_msgs.msg import Transition

        request = self.change.Request(transition=Transition(id=getattr(Transition, f"TRANSITION_{label.upper()}")))
        begin = time.perf_counter()
        reply = self.client.call(self.changer, request, timeout=120.0)
        seconds = time.perf_counter() - begin
        if reply is None or not reply.success:
            raise RuntimeError(f"lifecycle {label} failed (state now {self.state()}): see the node's log")
        return seconds


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="vlkd_ros/models/grasp_default", help="grasp model dir to serve")
    p.add_argument("--shots-data", default="data/clutter_shots", help="clutter dataset the shots come from")
    p.add_argument("--jobs", type=int, default=20, help="~/add_object goals")
    p.add_argument("--k", type=int, default=5, help="shots per goal")
    p.add_argument("--min-visible", type=float, default=0.5, help="least visible fraction of a shot's object")
    p.add_argument("--camera-rate", type=float, default=15.0, help="camera frames per second")
    p.add_argument("--frame-size", type=int, default=480, help="square camera frame side (px)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between a step and its memory reading")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="extra node parameter")
    p.add_argument("--out", help="also write the results as JSON here")
    return p.parse_args()


def run(args: argparse.Namespace, env: dict, state_dir: str) -> dict:
    """Start camera and node, go through the node's life, and return every reading."""
    import rclpy

    from vlkd_interfaces.srv import RemoveObject
    from vlkd_ros.ros.client import PerceptionClient, interrupt

    plan, lacking = teaching_plan(args.shots_data, args.model_dir, args.jobs, args.k, args.min_visible)
    ns = f"/vlkd_memory{os.getpid()}"
    node_name = f"{ns}/{NODE}"
    camera = start([*VLKD, "sim-camera", "--source", "images", "--images", str(Path(args.shots_data) / "episodes"),
                    "--image-size", str(args.frame_size), "--rate", str(args.camera_rate),
                    "--topic", f"{ns}/camera/image_raw"], env)
    node = start([*VLKD, "serve", "--model-dir", args.model_dir, "--state-dir", state_dir,
                  "--camera-topic", f"{ns}/camera/image_raw", "--ros-args", "-r", f"__ns:={ns}",
                  "-p", "autostart:=false", *[x for p in args.param for x in ("-p", p)]], env)
    samples: list[dict] = []

    def sample(point: str, active: bool = True) -> None:
        time.sleep(args.settle)
        samples.append({"point": point, "active": active, **memory_mb(node.pid),
                        "torch_mapped": mapped_files(node.pid, TORCH_LIBRARIES),
                        "onnxruntime_mapped": bool(mapped_files(node.pid, ("onnxruntime",))),
                        "largest_mappings": rss_by_mapping(node.pid)})

    rclpy.init()
    client = PerceptionClient(node_name, "vlkd_memory_bench")
    lifecycle = Lifecycle(client, node_name)
    out: dict = {"lacking_shots": lacking}
    try:
        lifecycle.wait(120.0)
        sample(lifecycle.state(), active=False)
        configure_s = lifecycle.transition("configure")
        activate_s = lifecycle.transition("activate")
        out["lifecycle"] = {"configure_s": round(configure_s, 3), "activate_s": round(activate_s, 3),
                            "configure_to_active_s": round(configure_s + activate_s, 3)}
        sample("active, idle")
        wait_ready(client, plan[0][0], node)  # a question about a name it was not trained on (the text tower)
        sample("active, first answer")
        jobs = []
        for i, (name, images, boxes) in enumerate(plan, 1):
            begin = time.perf_counter()
            ended = client.add_object(add_object_goal(name, images, boxes), timeout=180.0)
            seconds = time.perf_counter() - begin
            success, message = (ended[1].success, ended[1].message) if ended else (False, "no result in 180 s")
            answer = client.ask_many([], timeout=30.0)
            jobs.append({"name": name, "success": bool(success), "message": message, "seconds": round(seconds, 2),
                         "query_ok": bool(answer and answer.success), "known": len(answer.names) if answer else 0})
            sample(f"after job {i}")
            print(f"job {i:2d} {name:20s} {'ok  ' if success else 'FAIL'} {seconds:5.2f} s  "
                  f"RSS {samples[-1]['VmRSS']} MB  {message[:80]}", flush=True)
        out["jobs"] = jobs
        removed = [client.call(client.remove, RemoveObject.Request(name=j["name"])) for j in jobs if j["success"]]
        out["removed"] = sum(bool(r and r.success) for r in removed)
        sample(f"after remove_object x{out['removed']}")
        lifecycle.transition("deactivate")
        sample("after deactivate", active=False)
        lifecycle.transition("cleanup")
        sample("after cleanup", active=False)
    finally:
        client.close()
        rclpy.try_shutdown()
        log = interrupt(node)
        interrupt(camera)
    out["samples"] = samples
    out["node_log_tail"] = log[-2000:]
    return out


def goals(out: dict) -> list[dict]:
    """The issue's goals: what, value, goal and whether it was met."""
    points = {s["point"]: s for s in out["samples"]}
    active = [s["VmRSS"] for s in out["samples"] if s["active"]]
    jobs = [points[f"after job {i}"]["VmRSS"] for i in range(1, len(out["jobs"]) + 1)]
    drift = max(abs(r - jobs[0]) for r in jobs)
    torch = sorted({p for s in out["samples"] for p in s["torch_mapped"]})
    seconds = out["lifecycle"]["configure_to_active_s"]
    rows = [("RSS active (max)", max(active), f"<= {GOALS['active_rss_mb']} MB", max(active) <= GOALS["active_rss_mb"]),
            (f"RSS over {len(jobs)} jobs, largest change from after job 1", round(drift, 1),
             f"<= {GOALS['jobs_rss_drift_mb']} MB (spread max - min {max(jobs) - min(jobs):.1f} MB)",
             drift <= GOALS["jobs_rss_drift_mb"]),
            ("torch libraries mapped in the node", len(torch), "none" if not torch else ", ".join(torch[:3]),
             not torch),
            ("configure -> active", seconds, f"<= {GOALS['configure_to_active_s']} s (configure "
             f"{out['lifecycle']['configure_s']} + activate {out['lifecycle']['activate_s']})",
             seconds <= GOALS["configure_to_active_s"])]
    return [{"what": what, "value": value, "goal": goal, "met": met} for what, value, goal, met in rows]


def report(out: dict) -> None:
    """Print the memory table, the jobs and the goals."""
    n = len(out["jobs"])
    shown = {"unconfigured", "active, idle", "active, first answer", *(f"after job {i}" for i in (1, 5, 10, n)),
             "after deactivate", "after cleanup"}
    print(f"\n# vlkd_perception memory ({out['machine']}; load average before/after {out['load_before']} / "
          f"{out['load_after']})\n\n| point | VmRSS (MB) | VmHWM (MB) |\n|---|---|---|")
    for s in out["samples"]:
        if s["point"] in shown or s["point"].startswith("after remove_object"):
            print(f"| {s['point']} | {s['VmRSS']} | {s['VmHWM']} |")
    done = [j for j in out["jobs"] if j["success"]]
    times = sorted(j["seconds"] for j in out["jobs"])
    print(f"\njobs: {len(done)} of {n} succeeded, {out['removed']} removed; goal round trip median "
          f"{times[len(times) // 2]} s, max {times[-1]} s; every query after a job answered: "
          f"{all(j['query_ok'] for j in out['jobs'])}; Y_ood objects without enough shots: {out['lacking_shots']}")
    print("\ngoals:")
    for g in out["goals"]:
        print(f"  {'met   ' if g['met'] else 'MISSED'} {g['what']}: {g['value']} ({g['goal']})")


def main() -> int:
    """Run the benchmark, print the table and the goals, write JSON."""
    args = parse_args()
    env = peer_env()
    with tempfile.TemporaryDirectory(prefix="vlkd_memory_state_") as state_dir:
        load_before = [round(x, 2) for x in os.getloadavg()]
        out = run(args, env, state_dir)
    out.update(command=" ".join(sys.argv), load_before=load_before, load_after=[round(x, 2) for x in os.getloadavg()],
               machine=f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    out["goals"] = goals(out)
    report(out)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
