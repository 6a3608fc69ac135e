"""`vlkd collect classification|clutter`: render datasets in ManiSkill 3 (glue over sim.collect_*)."""
from __future__ import annotations

import argparse

from vlkd_ros.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the collect command with its classification and clutter subcommands."""
    collect = sub.add_parser("collect", help="render classification or clutter datasets in ManiSkill 3",
                             description="Render a dataset dir (dataset.json, manifest.jsonl, CARD.md, montage.png). "
                                         "Resumable: rerun the same command after an interruption.")
    kinds = collect.add_subparsers(dest="kind", metavar="KIND", required=True)

    c = kinds.add_parser("classification", help="one object per image (ImageFolder train/val_on_train/val)",
                         description="Example: vlkd collect classification --objects offline --per-class 20")
    _common(c, "data/classification")
    c.add_argument("--per-class", type=int, help="images per category (default 20)")
    c.set_defaults(func=run_classification)

    k = kinds.add_parser("clutter", help="3-8 objects dropped on a table; base/hand RGB-D and graspable labels",
                         description="Example: vlkd collect clutter --objects offline --episodes 50")
    _common(k, "data/clutter_offline")
    k.add_argument("--episodes", type=int, help="number of scenes (default 50)")
    k.add_argument("--min-objects", type=int, help="fewest objects per scene (default 3)")
    k.add_argument("--max-objects", type=int, help="most objects per scene (default 8)")
    k.add_argument("--visible-threshold", type=float,
                   help="visible fraction an object needs to count as graspable (default 0.3)")
    k.set_defaults(func=run_clutter)


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--config", help="YAML file of settings (flags given here override it)")
    p.add_argument("--out", default=default_out, help=f"dataset dir to write or resume (default {default_out})")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier collection in --out first")
    p.add_argument("--objects", help="object set: offline (default), ycb, a YAML file, or several joined by commas")
    p.add_argument("--labels", help="only these categories, comma-separated (default: the whole set)")
    p.add_argument("--split", help="random (seeded ID/OOD, default), none (all ID, all in train/), or a YAML/JSON "
                                   "file with id: and ood: lists")
    p.add_argument("--ood-fraction", type=float, help="share of categories held out as OOD (default 0.5)")
    p.add_argument("--val-fraction", type=float, help="share of ID data held out in val_on_train (default 0.2)")
    p.add_argument("--image-size", type=int, help="square image size in pixels (default 128)")
    p.add_argument("--seed", type=int, help="collection seed (default 0)")
    p.add_argument("--workers", type=int, help="parallel worker processes (default 1)")
    p.add_argument("--sim-backend", choices=("cpu", "gpu"), help="cpu (default) or gpu: ManiSkill GPU-parallel "
                                                                 "scenes, needs CUDA")
    p.add_argument("--num-envs", type=int, help="parallel scenes per batch with --sim-backend gpu (default 8)")


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    shared = ("objects", "labels", "split", "ood_fraction", "val_fraction", "image_size", "seed", "workers",
              "sim_backend", "num_envs")
    return {n: getattr(args, n) for n in shared + names}


def run_classification(args: argparse.Namespace) -> int:
    """Collect a classification dataset and print where it is."""
    from sim.collect_classification import collect_classification
    from sim.config import ClassificationConfig, load_config

    config = load_config(ClassificationConfig, args.config, **_overrides(args, ("per_class",)))
    return _run(lambda: collect_classification(config, args.out, overwrite=args.overwrite), args.out)


def run_clutter(args: argparse.Namespace) -> int:
    """Collect a clutter dataset and print where it is."""
    from sim.collect_clutter import collect_clutter
    from sim.config import ClutterConfig, load_config

    config = load_config(ClutterConfig, args.config, **_overrides(
        args, ("episodes", "min_objects", "max_objects", "visible_threshold")))
    return _run(lambda: collect_clutter(config, args.out, overwrite=args.overwrite), args.out)


def _run(collect, out: str) -> int:
    from sim.errors import SimError

    try:
        info = collect()
    except SimError as err:
        raise CLIError(str(err)) from err
    print(f"dataset dir: {out} ({info.kind}, {len(info.labels)} labels; see {out}/CARD.md and {out}/montage.png)")
    return 0
