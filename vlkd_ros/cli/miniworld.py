"""`vlkd pretrain-teacher`, `vlkd eval-teacher`, `vlkd demo`, `vlkd reproduce`: the offline mini-world."""
from __future__ import annotations

import argparse
import logging

from vlkd_formats.config import load_config
from vlkd_ros.cli import CLIError
from vlkd_ros.cli.flags import add_config_flags, flag_overrides


COMMANDS = ("pretrain-teacher", "eval-teacher", "demo", "reproduce")  # the subcommands `register` adds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the mini-world subcommands."""
    p = sub.add_parser("pretrain-teacher", help="pretrain the small CLIP teacher on renders of all categories",
                       description="Example: vlkd pretrain-teacher --config configs/pretrain_teacher.yaml")
    p.add_argument("--config", help="YAML (training.pretrain_teacher.PretrainConfig)")
    p.add_argument("--eval-data", help="dataset dir with val_on_train/ and val/ to record zero-shot accuracy")
    p.add_argument("--eval-clutter", help="clutter dataset dir (not the one pretrained on) to record the zero-shot "
                                          "crop top-1 and ROC AUC of 'object X is in this scene' (needs --eval-data)")
    p.add_argument("--resume", action="store_true", help="continue from the run dir's last checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. epochs=10")
    p.set_defaults(func=run_pretrain)

    t = sub.add_parser("eval-teacher", help="what a teacher knows zero-shot, each figure beside chance",
                       description="On a clutter dataset: top-1 naming of each visible object's crop (among its "
                                   "part's names and among all names) and whole-frame presence ROC AUC; on a "
                                   "classification dataset: zero-shot accuracy. Example: vlkd eval-teacher "
                                   "data/clutter_heldout data/miniworld/classification --teacher vlkd-offline")
    t.add_argument("datasets", nargs="+", help="clutter (`vlkd collect clutter`) or classification dataset dirs")
    t.add_argument("--teacher", default="vlkd-offline",
                   help="a shipped teacher name, a local-dir:/hf-hub: name or a folder holding open_clip_config.json "
                        "and weights (default vlkd-offline)")
    t.add_argument("--cache-dir", default="runs/cache", help="teacher feature cache (default runs/cache)")
    t.add_argument("--out", help="also write the figures to this JSON file and the table beside it (.md)")
    t.set_defaults(func=run_eval_teacher)

    from vlkd_ros.pipeline import MiniWorldConfig, ReproduceConfig

    for name, helptext in (("demo", "render, distil ResNet18 on Y_id, evaluate ID / 0-shot OOD / 5-shot OOD"),
                           ("reproduce", "the paper's Table 1 in the mini-world: loss rows x 3 seeds")):
        d = sub.add_parser(name, help=helptext, description=f"{helptext}. Example: vlkd {name} --quick")
        d.add_argument("--quick", action="store_true", help="small data and schedule (under 3 minutes on 2 CPU cores)")
        d.add_argument("--config", help="YAML file of MiniWorldConfig settings (--quick, then flags, apply on top)")
        add_config_flags(d, MiniWorldConfig, ("workdir", "data_dir", "workers", "epochs", "fewshot_steps"),
                         defaults={"workdir": f"runs/{name}"})
        if name == "reproduce":
            add_config_flags(d, ReproduceConfig, ("seeds", "rows"), defaults={"rows": "all"})
        d.set_defaults(func=run_demo if name == "demo" else run_reproduce)


def _miniworld(args: argparse.Namespace, workdir: str):
    """Defaults (workdir per command), then --config, then --quick, then the flags."""
    from vlkd_ros.pipeline import MiniWorldConfig

    config = load_config(MiniWorldConfig, args.config, base=MiniWorldConfig(workdir=workdir))
    if args.quick:
        config = config.quick()
    return load_config(MiniWorldConfig, None, flag_overrides(args, MiniWorldConfig), base=config)


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrain and, with --eval-data, write the teacher card."""
    import shlex
    import sys

    from training.pretrain_teacher import PretrainConfig, pretrain_teacher, write_teacher_card

    if args.eval_clutter and not args.eval_data:
        raise CLIError("--eval-clutter needs --eval-data (the card records both)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(PretrainConfig, args.config, args.overrides)
    out = pretrain_teacher(config, resume=args.resume)
    if args.eval_data:
        from training.teacher_eval import evaluate_teacher, teacher_table

        result = evaluate_teacher(str(out), [args.eval_data] + ([args.eval_clutter] if args.eval_clutter else []),
                                  str(config.run_path() / "eval_cache"))
        print(teacher_table(result))
        write_teacher_card(out, result, "vlkd " + shlex.join(sys.argv[1:]), config)
    print(f"teacher: {out} (use teacher.model=local-dir:{out} teacher.pretrained=null)")
    return 0


def run_eval_teacher(args: argparse.Namespace) -> int:
    """Evaluate the teacher on each dataset and print the table (and write it with --out)."""
    from pathlib import Path

    from training.teacher_eval import evaluate_teacher, teacher_table
    from vlkd_formats.atomic_io import atomic_write_json, atomic_write_text

    logging.basicConfig(level=logging.WARNING)
    result = evaluate_teacher(args.teacher, args.datasets, args.cache_dir)
    table = teacher_table(result)
    print(table)
    if args.out:
        out = Path(args.out)
        atomic_write_json(out, result)
        atomic_write_text(out.with_suffix(".md"), table)
        print(f"written: {out}, {out.with_suffix('.md')}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    from vlkd_ros.pipeline import demo_summary, run_demo as demo

    logging.basicConfig(level=logging.WARNING)
    print(demo_summary(demo(_miniworld(args, "runs/demo"))))
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the Table-1 reproduction and print the table."""
    from vlkd_ros.pipeline import ReproduceConfig, run_reproduce as reproduce, table1_markdown

    logging.basicConfig(level=logging.WARNING)
    config = _miniworld(args, "runs/reproduce")
    repro = load_config(ReproduceConfig, None, flag_overrides(args, ReproduceConfig))
    print(table1_markdown(reproduce(config, repro), config.k_shot, len(repro.seeds)))
    print(f"written: {config.workdir}/table1.md, table1.json, table1.png")
    return 0
