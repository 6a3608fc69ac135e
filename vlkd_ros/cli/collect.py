"""`vlkd collect classification|clutter`: render datasets in ManiSkill 3 (glue over sim.collect_*)."""
from __future__ import annotations

import argparse

from vlkd_formats.config import load_config
from vlkd_ros.cli import CLIError
from vlkd_ros.cli.flags import add_config_flags, flag_overrides


# Flags of the shared CollectConfig fields (both kinds) and of each kind's own fields; `--image-size` sets
# `image_size` and so on, through vlkd_ros.cli.flags.
SHARED_FIELDS = ("objects", "labels", "split", "ood_fraction", "val_fraction", "image_size", "seed", "workers",
                 "sim_backend", "num_envs")
KIND_FIELDS = {"classification": ("per_class",),
               "clutter": ("episodes", "min_objects", "max_objects", "visible_threshold", "ood_episode_fraction",
                           "views_per_scene", "split_seed")}


COMMANDS = ("collect",)  # the subcommands `register` adds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the collect command with its classification and clutter subcommands."""
    from sim.backend import SIM_BACKENDS
    from sim.config import CameraPoseConfig, ClassificationConfig, ClutterConfig, LightingConfig

    collect = sub.add_parser("collect", help="render classification or clutter datasets in ManiSkill 3",
                             description="Render a dataset dir (dataset.json, manifest.jsonl, CARD.md, montage.png). "
                                         "Resumable: rerun the same command after an interruption.")
    kinds = collect.add_subparsers(dest="kind", metavar="KIND", required=True)

    c = kinds.add_parser("classification", help="one object per image (ImageFolder train/val_on_train/val)",
                         description="Example: vlkd collect classification --objects offline --per-class 20")
    k = kinds.add_parser("clutter", help="3-8 objects dropped on a table; base/hand RGB-D and graspable labels",
                         description="Example: vlkd collect clutter --objects offline --episodes 50")
    for parser, kind, cls, default_out, func in (
            (c, "classification", ClassificationConfig, "data/classification", run_classification),
            (k, "clutter", ClutterConfig, "data/clutter_offline", run_clutter)):
        parser.add_argument("--config", help="YAML file of settings (flags given here override it)")
        parser.add_argument("--out", default=default_out,
                            help=f"dataset dir to write or resume (default {default_out})")
        parser.add_argument("--overwrite", action="store_true", help="delete an earlier collection in --out first")
        add_config_flags(parser, cls, SHARED_FIELDS + KIND_FIELDS[kind], choices={"sim_backend": SIM_BACKENDS})
        parser.set_defaults(func=func)
    # the clutter config's sections: `--azimuth-deg` sets `camera_poses.azimuth_deg` and so on
    for title, section, prefix in (("base-camera views", CameraPoseConfig, "camera_poses."),
                                   ("lighting", LightingConfig, "lighting.")):
        add_config_flags(k.add_argument_group(title), section, prefix=prefix, registry=k)


def run_classification(args: argparse.Namespace) -> int:
    """Collect a classification dataset and print where it is."""
    from sim.collect_classification import collect_classification
    from sim.config import ClassificationConfig

    config = load_config(ClassificationConfig, args.config, flag_overrides(args, ClassificationConfig))
    return _run(lambda: collect_classification(config, args.out, overwrite=args.overwrite), args.out)


def run_clutter(args: argparse.Namespace) -> int:
    """Collect a clutter dataset and print where it is."""
    from sim.collect_clutter import collect_clutter
    from sim.config import ClutterConfig

    config = load_config(ClutterConfig, args.config, flag_overrides(args))  # its own flags and its sections
    return _run(lambda: collect_clutter(config, args.out, overwrite=args.overwrite), args.out)


def _run(collect, out: str) -> int:
    from sim.errors import SimError

    try:
        info = collect()
    except SimError as err:
        raise CLIError(str(err)) from err
    print(f"dataset dir: {out} ({info.kind}, {len(info.labels)} labels; see {out}/CARD.md and {out}/montage.png)")
    return 0
