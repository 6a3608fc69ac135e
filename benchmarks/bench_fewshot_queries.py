"""Benchmark: teaching new objects as query vectors, as a user would through `GraspFeasibility.add_object`, for
every Y_ood object of a held-out clutter benchmark: k shots of it from another render (other seeds; its box from
the simulator's mask as the region of interest, or none with --no-roi), then its ROC AUC and F1 on the benchmark's
X_ood frames before (zero-shot) and after, the job's time once the shots are in, whether it succeeded, and whether
every trained object's answers on the benchmark's frames stayed bit-identical.

    vlkd collect clutter --config clutter_train --seed 7777 --episodes 150 --ood-episode-fraction 0.95 \
        --out data/clutter_shots                 # shots: training camera ranges, a seed no other set uses
    vlkd collect clutter --config clutter_heldout --out data/clutter_heldout
    python benchmarks/bench_fewshot_queries.py --shots-data data/clutter_shots --eval-data data/clutter_heldout \
        --out benchmarks/results/fewshot_queries.json

No step reads the benchmark's frames but the before/after measurement: the query is fitted and judged on the shots
and on the model dir's own held-out training frames.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from training.grasp.data import GraspDataConfig, load_clutter_data
from vlkd_formats.model_dir import KIND_GRASP, read_card, resolve_model_dir
from vlkd_ros.inference import GraspFeasibility, default_model_dir, name_quality
from vlkd_ros.inference.observations import episode_observation


def shot_episodes(data, name: str, k: int, min_visible: float) -> list:
    """k episodes of `name` from different scenes, graspable, at least `min_visible` of it in view."""
    picked, scenes = [], set()
    for episode in data.train + data.x_id + data.x_ood:
        label = episode.objects.get(name)
        scene = episode.id.rsplit("_v", 1)[0]
        if label and label.graspable and label.bbox and label.visible_fraction >= min_visible and scene not in scenes:
            picked.append(episode)
            scenes.add(scene)
        if len(picked) == k:
            break
    return picked


def card_objects_with_shots(shots_data: str, model_dir: str | None, k: int, min_visible: float
                            ) -> tuple[list[tuple[str, list]], list[str]]:
    """([(name, its k `shot_episodes`)], [names with fewer]) over the Y_ood objects of a model dir's card (None: the
    shipped model), in the card's order."""
    data = load_clutter_data(GraspDataConfig(root=shots_data))
    card = read_card(resolve_model_dir(model_dir or default_model_dir()), KIND_GRASP)
    usable, lacking = [], []
    for name in card.labels["ood"]:
        episodes = shot_episodes(data, name, k, min_visible)
        if len(episodes) == k:
            usable.append((name, episodes))
        else:
            lacking.append(name)
    return usable, lacking


def pixel_box(bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A mask's inclusive pixel box as the x_min, y_min, x_max, y_max edges `add_object` takes."""
    return bbox[0], bbox[1], bbox[2] + 1, bbox[3] + 1


def main(argv: list[str] | None = None) -> int:
    """Teach every Y_ood object of --eval-data from --shots-data shots; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="grasp model dir (default: the shipped one)")
    parser.add_argument("--shots-data", required=True, help="clutter dataset the shots come from")
    parser.add_argument("--eval-data", required=True, help="held-out clutter benchmark (its X_ood frames)")
    parser.add_argument("--k", type=int, default=5, help="shots per object")
    parser.add_argument("--min-visible", type=float, default=0.5, help="least visible fraction of a shot's object")
    parser.add_argument("--roi", action=argparse.BooleanOptionalAction, default=True,
                        help="give each shot's box as its region of interest")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)

    shots_data = load_clutter_data(GraspDataConfig(root=args.shots_data))
    bench = load_clutter_data(GraspDataConfig(root=args.eval_data))
    with tempfile.TemporaryDirectory() as state:
        model = GraspFeasibility.from_checkpoint(args.model, backend="onnx", state_dir=state)
        known = [n for n, _ in model.objects()]
        frames = [episode_observation(e, model.views) for e in (bench.x_id + bench.x_ood)[:100]]
        known_before = model.query(frames, known)
        rows = []
        for name in bench.ood_objects:
            episodes = shot_episodes(shots_data, name, args.k, args.min_visible)
            if len(episodes) < args.k:
                rows.append({"name": name, "state": "no shots", "shots": len(episodes)})
                continue
            images = [episode_observation(e, model.views) for e in episodes]
            rois = [pixel_box(e.objects[name].bbox) if args.roi else None for e in episodes]
            before = name_quality(model, bench.x_ood, name)
            start = time.perf_counter()
            job = model.add_object(name, images, k=args.k, rois=rois)
            job.wait()
            seconds = time.perf_counter() - start
            after = name_quality(model, bench.x_ood, name)
            rows.append({"name": name, "state": job.state, "seconds": seconds, "auc_before": before["auc"],
                         "auc_after": after["auc"], "f1_before": before["f1"], "f1_after": after["f1"],
                         "graspable": before["graspable"], "observations": before["observations"],
                         "heldout_auc": job.report.get("heldout_auc"),
                         "zero_shot_heldout_auc": job.report.get("zero_shot_heldout_auc"), "message": job.message})
            print(f"{name:18s} {job.state:9s} {seconds:5.2f} s  ROC AUC {before['auc']:.3f} -> {after['auc']:.3f}  "
                  f"F1 {before['f1']:.3f} -> {after['f1']:.3f}", flush=True)
        identical = model.query(frames, known) == known_before
        model.close()
    done = [r for r in rows if r["state"] == "succeeded"]
    summary = {"objects": len(rows), "succeeded": len(done),
               "auc_raised": sum(r["auc_after"] > r["auc_before"] for r in done),
               "median_auc_before": statistics.median([r["auc_before"] for r in done]) if done else None,
               "median_auc_after": statistics.median([r["auc_after"] for r in done]) if done else None,
               "max_seconds": max((r["seconds"] for r in done), default=None),
               "known_answers_bit_identical": identical, "frames_checked": len(frames), "roi": args.roi, "k": args.k}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows,
                                              "command": " ".join(sys.argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
