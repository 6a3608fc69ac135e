"""Benchmark of the vlkd_perception node over real DDS on loopback: service round trip and sustained camera rate.

Starts `vlkd serve` and `vlkd sim-camera --source images` as separate processes (like a robot would run them) and
measures from this process:
  * ~/is_graspable round trip p50/p95 (latest camera frame; a 640x480 rgb8 image in the request; 8 in flight),
  * for each camera rate asked for, the rate the node receives frames at (its /diagnostics frame counter),
    idle and while queries keep running,
  * GraspFeasibility.query alone in this process (the model's share of the round trip).

    python benchmarks/bench_ros_service.py --model-dir runs/grasp/model --calls 200 --rates 30 60 120
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vlkd_ros.cli.serve import ensure_ros_environment, use_large_frame_profile  # noqa: E402

VLKD = [str(Path(sys.executable).with_name("vlkd"))]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="grasp model dir to serve")
    p.add_argument("--calls", type=int, default=200, help="calls per round-trip measurement")
    p.add_argument("--rates", type=float, nargs="+", default=[30.0, 60.0, 120.0], help="camera rates to try (Hz)")
    p.add_argument("--frame-size", type=int, default=480, help="square camera frame side (px)")
    p.add_argument("--window", type=float, default=5.0, help="seconds per camera-rate measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the results as JSON here")
    return p.parse_args()


def percentiles(values: list[float]) -> dict:
    """p50/p95/mean in milliseconds."""
    import numpy as np

    arr = np.asarray(values) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p95_ms": round(float(np.percentile(arr, 95)), 2), "mean_ms": round(float(arr.mean()), 2)}


def timed_call(client: Any, name: str, image: Any = None, timeout: float = 30.0) -> tuple[Any, float]:
    """One blocking IsGraspable call through a vlkd_ros.ros.client.PerceptionClient: (reply, seconds)."""
    start = time.perf_counter()
    reply = client.ask(name, image, timeout)
    if reply is None:
        raise TimeoutError(f"no reply to is_graspable({name!r}) in {timeout} s")
    return reply, time.perf_counter() - start


def concurrent(client: Any, name: str, calls: int, in_flight: int) -> dict:
    """`calls` calls with `in_flight` outstanding; throughput and per-call round trip."""
    start = time.perf_counter()
    results = client.flood([name], calls, in_flight, timeout=120.0)
    elapsed = time.perf_counter() - start
    failures = [r.message for _, r, _ in results if not r.success]
    return {**percentiles([r[2] for r in results]), "calls_per_s": round(len(results) / elapsed, 1),
            "failed": len(failures), "failures": sorted({m.split(";")[0] for m in failures})}


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    """A peer process with its output kept for errors."""
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def frames_folder(size: int) -> Path:
    """A few noisy frames of `size` px for the image-folder camera."""
    import numpy as np
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="vlkd_bench_frames_"))
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def wait_ready(client: Any, name: str, timeout: float = 120.0) -> None:
    """Until a call on the latest camera frame succeeds."""
    end = time.monotonic() + timeout
    if not client.wait_for_services(timeout):
        raise TimeoutError("the node's services did not appear")
    while time.monotonic() < end:
        reply, _ = timed_call(client, name)
        if reply.success:
            return
        time.sleep(0.5)
    raise TimeoutError(f"no successful answer within {timeout} s: {reply.message}")


def next_diag(client: Any, timeout: float = 60.0) -> tuple[float, dict]:
    """The next /diagnostics status of the node: (arrival time, values)."""
    mark, end = len(client.diagnostics), time.monotonic() + timeout
    while len(client.diagnostics) == mark:
        if time.monotonic() > end:
            raise TimeoutError("the node published no diagnostics")
        time.sleep(0.02)
    return client.diagnostics[-1]["time"], client.diagnostics[-1]


def received_rate(client: Any, window: float, load: Any, name: str) -> float:
    """Frames per second the node counted over `window` seconds (with query load when given)."""
    stop_load = threading.Event()

    def keep_asking() -> None:
        while not stop_load.is_set():
            timed_call(load, name)

    loader = threading.Thread(target=keep_asking, daemon=True) if load is not None else None
    if loader is not None:
        loader.start()
    t0, d0 = next_diag(client)
    while float(d0["camera_rate_hz"]) <= 0.0:  # until frames from the (re)started camera arrive
        t0, d0 = next_diag(client)
    t0, d0 = next_diag(client)
    time.sleep(window)
    t1, d1 = next_diag(client)
    stop_load.set()
    if loader is not None:
        loader.join(timeout=10)
    return (int(d1["frames_received"]) - int(d0["frames_received"])) / (t1 - t0)


def direct_query(model_dir: str, device: str, name: str, calls: int) -> dict:
    """The node's work without ROS: convert a 480x480 rgb8 message as the node does, then GraspFeasibility.query,
    in this process (the model's share of the round trip)."""
    import numpy as np

    from vlkd_ros.inference import GraspFeasibility
    from vlkd_ros.ros.image_msgs import image_to_rgb, numpy_to_image

    model = GraspFeasibility.from_checkpoint(model_dir, device=device)
    msg = numpy_to_image(np.random.default_rng(2).integers(0, 256, (480, 480, 3), dtype=np.uint8), "rgb8")
    for _ in range(5):  # warm-up
        model.query(image_to_rgb(msg, shrink_to=model.image_size), [name])
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.query(image_to_rgb(msg, shrink_to=model.image_size), [name])
        times.append(time.perf_counter() - start)
    return percentiles(times)


def main() -> int:
    """Run the measurements and print a Markdown table and JSON."""
    args = parse_args()
    ensure_ros_environment()
    use_large_frame_profile()  # what `vlkd serve` / `vlkd sim-camera` use; the peers inherit it
    import numpy as np
    import rclpy

    from vlkd_ros.ros.client import PerceptionClient, interrupt
    from vlkd_ros.ros.image_msgs import numpy_to_image

    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=env.get("ROS_DOMAIN_ID", str(1 + os.getpid() % 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    os.environ.update(ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"], ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    ns = f"/vlkd_bench{os.getpid()}"
    topic = f"{ns}/camera/image_raw"
    frames = frames_folder(args.frame_size)
    node = start([*VLKD, "serve", "--model-dir", args.model_dir, "--camera-topic", topic, "--device", args.device,
                  "--ros-args", "-r", f"__ns:={ns}", "-p", "results_rate:=0.0"], env)
    camera = None
    results: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} CPUs", "frame_size": args.frame_size, "device": args.device}
    rclpy.init()
    client = None
    try:
        client = PerceptionClient(f"{ns}/vlkd_perception", "vlkd_bench_client")
        camera_cmd = [*VLKD, "sim-camera", "--source", "images", "--images", str(frames),
                      "--image-size", str(args.frame_size), "--topic", topic]
        camera = start([*camera_cmd, "--rate", "30"], env)
        from vlkd_interfaces.srv import ListObjects

        wait_ready(client, "mug")
        listing = client.call(client.list, ListObjects.Request())
        name, results["model_version"] = listing.names[0], listing.model_version

        for _ in range(10):  # warm-up
            timed_call(client, name)
        results["latest_frame"] = percentiles([timed_call(client, name)[1] for _ in range(args.calls)])
        results["fastdds_profile"] = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
        image = numpy_to_image(np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8), "rgb8")
        results["request_image_640x480"] = percentiles([timed_call(client, name, image)[1]
                                                         for _ in range(args.calls)])
        results["latest_frame_8_in_flight"] = concurrent(client, name, args.calls, 8)
        _, last = next_diag(client)
        results["node_callback"] = {"p50_ms": float(last["latency_p50_ms"]), "p95_ms": float(last["latency_p95_ms"])}

        interrupt(camera)
        rates = []
        for rate in args.rates:
            camera = start([*camera_cmd, "--rate", str(rate)], env)
            idle = received_rate(client, args.window, None, name)
            loaded = received_rate(client, args.window, client, name)
            out = interrupt(camera)
            published = next((line.split("at ")[-1] for line in out.splitlines() if "published" in line), "?")
            rates.append({"asked_hz": rate, "camera_published": published.strip(),
                          "node_received_hz": round(idle, 1), "node_received_hz_under_queries": round(loaded, 1)})
            camera = None
        results["camera_rates"] = rates
    finally:
        if camera is not None:
            interrupt(camera)
        node_out = interrupt(node)
        if client is not None:
            client.close()
        rclpy.try_shutdown()
    if "camera_rates" not in results:
        print(node_out[-3000:], file=sys.stderr)
        return 1
    results["direct_query_480x480"] = direct_query(args.model_dir, args.device, name, args.calls)
    results["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews times

    print(f"# vlkd_perception service benchmark ({results['machine']}, model {results['model_version']}, "
          f"load average {results['load_average_1_5_15']})\n")
    print("| measurement | n | p50 ms | p95 ms | mean ms | calls/s |\n|---|---|---|---|---|---|")
    for key in ("latest_frame", "request_image_640x480", "latest_frame_8_in_flight", "direct_query_480x480"):
        r = results[key]
        print(f"| {key} | {r['n']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} | {r.get('calls_per_s', '')} |")
    print(f"\nnode callback time (its /diagnostics, last {500} calls): p50 {results['node_callback']['p50_ms']} ms, "
          f"p95 {results['node_callback']['p95_ms']} ms")
    print(f"\n| camera asked (Hz, {args.frame_size}x{args.frame_size} rgb8) | camera published | node received "
          "| node received under queries |\n|---|---|---|---|")
    for r in results["camera_rates"]:
        print(f"| {r['asked_hz']} | {r['camera_published']} | {r['node_received_hz']} "
              f"| {r['node_received_hz_under_queries']} |")
    print("\n" + json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
