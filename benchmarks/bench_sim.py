"""Rendering throughput of the sim collectors: frames/s of one process and of N worker processes, per image size.

    python benchmarks/bench_sim.py                      # 128 and 224 px, 1 and 2 processes, both collectors
    python benchmarks/bench_sim.py --sizes 64 --kinds classification --frames 20 --json bench.json

Each process runs the collector's own shard function (`sim.collect_*.render_shard`: scene rebuild, render, PNG
writes, manifest rows) into a scratch dir. Startup (imports, env creation, shader compilation) is reported apart;
the steady rate of a process is (frames - 1) / (time of last frame - time of first frame), and the rate of N
concurrent processes is the sum of theirs. A classification frame is one RGB image; a clutter episode (drop,
settle, base + hand RGB-D + segmentation, one visibility render per object) counts as 2 camera frames.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.config import ClassificationConfig, ClutterConfig  # noqa: E402
from sim.shards import prepare_out_dir  # noqa: E402

CAMERA_FRAMES = {"classification": 1, "clutter": 2}


def _config(kind: str, size: int, samples: int, workers: int):
    if kind == "classification":
        return ClassificationConfig(image_size=size, per_class=-(-samples // 40) if samples > 40 else 1,
                                    labels=None, workers=workers).validate()
    return ClutterConfig(image_size=size, episodes=samples, workers=workers).validate()


def _process(kind: str, config, out: str, worker: int, workers: int, limit: int, results) -> None:
    from sim import collect_classification, collect_clutter

    module = collect_classification if kind == "classification" else collect_clutter
    start, stamps = time.perf_counter(), []

    class Enough(Exception):
        pass

    def progress(n: int) -> None:
        stamps.extend([time.perf_counter()] * n)
        if len(stamps) >= limit:
            raise Enough

    try:
        module.render_shard(config, out, worker, workers, progress)
    except Enough:
        pass
    results.put((worker, stamps[0] - start, (len(stamps) - 1) / (stamps[-1] - stamps[0])))


def run(kind: str, size: int, workers: int, per_process: int) -> dict:
    """Benchmark one (collector, image size, process count) cell."""
    config = _config(kind, size, per_process * workers, workers)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data"
        prepare_out_dir(out, {"bench": kind}, overwrite=False)
        if kind == "clutter":
            from sim.collect_clutter import write_scenes

            write_scenes(config, out)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        procs = [ctx.Process(target=_process, args=(kind, config, str(out), w, workers, per_process, results))
                 for w in range(workers)]
        for proc in procs:
            proc.start()
        rows = [results.get(timeout=1800) for _ in procs]
        for proc in procs:
            proc.join()
    rate = sum(r[2] for r in rows) * CAMERA_FRAMES[kind]
    return {"kind": kind, "size": size, "processes": workers, "startup_s": round(max(r[1] for r in rows), 1),
            "frames_per_s": round(rate, 2), "per_process_frames_per_s": round(rate / workers, 2)}


def main() -> int:
    """Run the grid and print a Markdown table (and JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kinds", nargs="+", default=["classification", "clutter"], choices=list(CAMERA_FRAMES))
    parser.add_argument("--frames", type=int, default=40, help="classification images per process")
    parser.add_argument("--episodes", type=int, default=8, help="clutter episodes per process")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = []
    print(f"machine: {platform.node()} ({mp.cpu_count()} CPUs), sim backend cpu\n")
    print("| collector | px | processes | startup s | camera frames/s (all) | per process |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds:
        for size in args.sizes:
            for workers in args.workers:
                per = args.frames if kind == "classification" else args.episodes
                row = run(kind, size, workers, per)
                results.append(row)
                print(f"| {kind} | {size} | {workers} | {row['startup_s']} | {row['frames_per_s']} | "
                      f"{row['per_process_frames_per_s']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
