"""Benchmark: grasp-feasibility query latency (p50/p95, batch 1) of students through the inference API
(torch and ONNX backends) and, in the same run on the same images and names, of the teacher answering the
same queries (its image tower + the same prompt-pair scoring against cached text features); every figure is
also printed as a ratio to the first student's ONNX (or torch) p50.

    python benchmarks/bench_grasp_query.py                       # 224 px, ResNet18 vs ViT-L-14, CPU
    python benchmarks/bench_grasp_query.py --image-size 96 --student resnet18 efficientnet_b0:dense \
        mobilenet_v3_large:dense --model vlkd_ros/models/grasp_default --teacher vlkd-offline
    python benchmarks/bench_grasp_query.py --model runs/grasp/offline/model --teacher vlkd-offline
    python benchmarks/bench_grasp_query.py --out benchmarks/results/grasp_query.json

For each --student (`arch`, or `arch:dense` for per-location features: at output stride 16 where the backbone
dilates, ResNets and EfficientNets, else at its own 32), a grasp model dir
with untrained weights (latency does not depend on their values) is built at --image-size from the teacher's
text tower; --model adds a trained one; without --teacher-pretrained the teacher is randomly
initialised (its architecture, hence its latency, is that of the pretrained model). The ONNX backend serves the
model dir's export; when there is none it is written first, as `vlkd export --model DIR` does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds."""
    ms = sorted(1000 * s for s in seconds)
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
            "mean_ms": statistics.fmean(ms), "n": len(ms)}


def timed(fn, images: list[np.ndarray], warmup: int) -> list[float]:
    """Seconds per call of fn(image) over `images`, after `warmup` untimed calls."""
    for image in images[:warmup]:
        fn(image)
    out = []
    for image in images:
        t0 = time.perf_counter()
        fn(image)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def build_untrained_model_dir(out: Path, teacher, image_size: int, spec: str) -> Path:
    """A grasp model dir with random student weights at `image_size` and the teacher's text tower; `spec` is
    `arch` or `arch:dense`."""
    from training.grasp.model_dir import GraspCard, ReplayBuffer, write_grasp_model_dir
    from training.grasp.text import GraspTextConfig, TextTower, text_config_card
    from training.model_dir import ModelCard
    from training.students import DILATABLE, Student, StudentConfig
    from training.teacher import teacher_card
    from vlkd_formats.object_registry import ObjectEntry

    from vlkd_formats.config import to_dict

    arch, _, kind = spec.partition(":")
    config = StudentConfig(arch=arch, dense=kind == "dense",
                           output_stride=16 if kind == "dense" and arch.startswith(DILATABLE) else 32)
    student = Student(config, teacher.embed_dim, image_size)
    card = ModelCard(student=to_dict(config),
                     embed_dim=teacher.embed_dim, image_size=image_size, mean=list(teacher.mean),
                     std=list(teacher.std), teacher=teacher_card(teacher), labels={"id": [], "ood": []},
                     info={"task": "grasp", "untrained": True})
    grasp = GraspCard(views=["base_rgb"], image_size=image_size, depth_max_m=2.0,
                      text=text_config_card(GraspTextConfig()), logit_scale=1 / 0.07, logit_bias=0.0, threshold=0.5,
                      calibration={}, objects={"id": [], "ood": []}, local_weight=1.0 if config.dense else None)
    empty = torch.zeros(0, 3, image_size, image_size)
    replay = ReplayBuffer([], empty, torch.zeros(0, 0), None, empty, torch.zeros(0, 0))
    return write_grasp_model_dir(out, student, card, {"id": torch.zeros(0, teacher.embed_dim)}, grasp,
                                 TextTower.from_teacher(teacher), replay, [ObjectEntry("tea cup")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained grasp model dir (or its run dir) to time beside the students")
    parser.add_argument("--teacher", default="ViT-L-14", help="open_clip model or shipped teacher name")
    parser.add_argument("--teacher-pretrained", default=None, help="weights for the teacher (default: random init)")
    parser.add_argument("--student", nargs="+", default=["resnet18"],
                        help="untrained students to time: arch or arch:dense (the first is the ratios' baseline)")
    parser.add_argument("--image-size", type=int, default=224, help="camera frame side and untrained model input")
    parser.add_argument("--names", nargs="+", default=["tea cup", "hammer", "banana", "tennis ball", "coffee mug"])
    parser.add_argument("--runs", type=int, default=50, help="timed student queries")
    parser.add_argument("--teacher-runs", type=int, default=20,
                        help="timed teacher queries (ViT-L-14 takes seconds each on a small CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX backend")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from PIL import Image

    from training.grasp.model_dir import export_onnx, load_grasp_model_dir, read_grasp_card
    from training.grasp.text import prompt_texts
    from training.teacher import Teacher, TeacherConfig
    from vlkd_ros.inference import GraspFeasibility

    teacher = Teacher(TeacherConfig(model=args.teacher, pretrained=args.teacher_pretrained, device=args.device))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(args.runs)]
    with tempfile.TemporaryDirectory(prefix="bench_grasp_") as tmp:
        model_dirs = {f"student {spec} (untrained)": build_untrained_model_dir(Path(tmp) / f"model{i}", teacher,
                                                                              args.image_size, spec)
                      for i, spec in enumerate(args.student)}
        if args.model:
            model_dirs[f"model {args.model}"] = Path(args.model)
        results: dict[str, dict] = {}
        backends = ["torch"] + ([] if args.no_onnx else ["onnx"])
        for label, model_dir in model_dirs.items():
            for backend in backends:
                if backend == "onnx" and not load_grasp_model_dir(model_dir).onnx_path().is_file():
                    export_onnx(model_dir)  # what `vlkd export --model DIR` does; loading never exports
                model = GraspFeasibility.from_checkpoint(model_dir, device=args.device, backend=backend)
                results[f"{label} ({backend})"] = percentiles(timed(lambda f: model.query(f, args.names), frames,
                                                                    args.warmup))
                model.close()
        config = read_grasp_card(next(iter(model_dirs.values()))).text_config()  # the teacher uses the same prompts
    pos_texts, neg_texts = prompt_texts(args.names, config)
    pos, neg = teacher.encode_texts(pos_texts), teacher.encode_texts(neg_texts) if neg_texts else None

    def teacher_query(frame: np.ndarray) -> list[dict]:
        image = teacher.preprocess(Image.fromarray(frame)).unsqueeze(0)
        feats = teacher.encode_images(image)
        sim = feats @ pos.T - (feats @ neg.T if neg is not None else 0)
        scores = torch.sigmoid(sim / 0.07)[0].tolist()
        return [{n: {"graspable": s >= 0.5, "score": s} for n, s in zip(args.names, scores)}]

    results[f"teacher {args.teacher}"] = percentiles(timed(teacher_query, frames[:args.teacher_runs], args.warmup))
    meta = {"device": args.device, "threads": torch.get_num_threads(), "image": f"{args.image_size}x{args.image_size}",
            "batch": 1, "names": len(args.names), "model": args.model, "students": args.student,
            "teacher": args.teacher, "teacher_pretrained": args.teacher_pretrained, "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(meta))
    baseline = next(k for k in reversed(list(results)[:len(backends)]))  # the first student, ONNX if timed
    base = results[baseline]["p50_ms"]
    print(f"| model | p50 ms | p95 ms | mean ms | queries | p50 / {baseline} |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        r["p50_ratio"] = r["p50_ms"] / base
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['mean_ms']:.1f} | {r['n']} | "
              f"{r['p50_ratio']:.2f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
