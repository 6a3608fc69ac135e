"""Benchmark: student vs teacher inference time per image, and distillation training throughput with cached
teacher features vs teacher features computed on the fly. Both sides run in this one process.

    python benchmarks/bench_distill.py                      # ResNet18 vs ViT-L-14, 224 px (random init)
    python benchmarks/bench_distill.py --teacher ViT-B-32 --iters 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, iters: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="ViT-L-14")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    import open_clip

    from training.losses import DistillBatch, build_loss
    from training.students import Student, StudentConfig

    device = torch.device(args.device)
    teacher = open_clip.create_model(args.teacher, pretrained=None, device=device).eval()
    dim = int(teacher.text_projection.shape[-1])
    student = Student(StudentConfig(arch=args.student), dim, args.image_size).to(device)
    print(f"device {device}, threads {torch.get_num_threads()}, teacher {args.teacher}, student {args.student}, "
          f"{args.image_size} px")

    one = torch.randn(1, 3, args.image_size, args.image_size, device=device)
    student.eval()
    with torch.no_grad():
        t_student = statistics.median(timed(lambda: student(one), args.iters))
        t_teacher = statistics.median(timed(lambda: teacher.encode_image(one), max(2, args.iters // 3)))
    print(f"inference, batch 1: student {1e3 * t_student:.1f} ms/img, teacher {1e3 * t_teacher:.1f} ms/img, "
          f"teacher/student = {t_teacher / t_student:.1f}x")

    batch = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    text = F.normalize(torch.randn(10, dim, device=device), dim=-1)
    cached = F.normalize(torch.randn(args.batch, dim, device=device), dim=-1)
    criterion = build_loss([{"type": "cls"}, {"type": "mse"}, {"type": "im_cst"}, {"type": "vlprox"}])
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    student.train()

    def step(teacher_feats_fn):
        feats = student(batch)
        loss, _ = criterion(DistillBatch(feats, teacher_feats_fn(), text, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def on_the_fly():
        with torch.no_grad():
            return F.normalize(teacher.encode_image(batch).float(), dim=-1)

    iters = max(2, args.iters // 3)
    t_cached = statistics.median(timed(lambda: step(lambda: cached), iters))
    t_fly = statistics.median(timed(lambda: step(on_the_fly), iters))
    print(f"training, batch {args.batch}: cached teacher features {args.batch / t_cached:.1f} img/s, "
          f"on the fly {args.batch / t_fly:.1f} img/s, cached/on-the-fly = {t_fly / t_cached:.1f}x")


if __name__ == "__main__":
    main()
