"""`vlkd distill` and `vlkd eval`."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


COMMANDS = ("distill", "eval")  # the subcommands `register` adds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the distill and eval subcommands."""
    p = sub.add_parser("distill", help="distil a CLIP teacher into a student (torchrun for multi-GPU)",
                       description="Train a student on Y_id against cached teacher features. Example: "
                                   "vlkd distill --config configs/miniworld_resnet18.yaml optim.epochs=5")
    p.add_argument("--config", help="YAML config (defaults: training.distill.DistillConfig)")
    p.add_argument("--resume", action="store_true", help="continue from output_dir's last checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.01 student.arch=resnet34")
    p.set_defaults(func=run_distill)

    e = sub.add_parser("eval", help="ID / 0-shot OOD / k-shot OOD table and the paper's metrics",
                       description="Evaluate a model dir written by `vlkd distill`. Example: "
                                   "vlkd eval --model runs/distill eval.k_shot=5")
    e.add_argument("--model", required=True, help="distill model dir, or the run dir holding it as model/ (its "
                                                  "model.json records the data and teacher)")
    e.add_argument("--config", help="YAML with an `eval:` section and/or distill sections to override")
    e.add_argument("--out", help="output dir (default MODEL/eval)")
    e.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.k_shot=5 data.root=other")
    e.set_defaults(func=run_eval)


def run_distill(args: argparse.Namespace) -> int:
    """Load the config, train, print where the model is."""
    from vlkd_formats.config import load_config
    from training.distill import DistillConfig, distill

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(DistillConfig, args.config, args.overrides)
    out = distill(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model dir: {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a model dir and print the Markdown report."""
    from training.evaluate import evaluate, load_eval_configs

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    eval_config, distill_config = load_eval_configs(args.model, args.config, args.overrides)
    evaluate(args.model, eval_config, distill_config, args.out)
    out = Path(args.out or Path(args.model) / "eval")
    print((out / "eval.md").read_text())
    print(f"written: {out / 'eval.json'}, {out / 'eval.md'}" + (", plots *.png" if eval_config.plots else ""))
    return 0
