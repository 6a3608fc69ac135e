"""`vlkd train-grasp`, `vlkd eval-grasp`, `vlkd add-object` and `vlkd finetune-grasp`: grasp feasibility from clutter
observations."""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from vlkd_ros.cli.flags import add_config_flags, flag_overrides


# the subcommands `register` adds
COMMANDS = ("train-grasp", "build-grasp-model", "eval-grasp", "add-object", "finetune-grasp")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the grasp subcommands."""
    t = sub.add_parser("train-grasp", help="train the grasp-feasibility student on a clutter dataset",
                       description="Multi-label training on Y_id clutter observations, threshold calibration, model "
                                   "dir. Example: vlkd train-grasp --config configs/grasp_offline.yaml "
                                   "data.root=data/clutter_offline")
    t.add_argument("--config", help="YAML config (defaults: training.grasp.train.GraspTrainConfig)")
    t.add_argument("--resume", action="store_true", help="continue from output_dir's last checkpoint")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.views=[base_rgb,base_depth] "
                                                "student.in_chans=4")
    t.set_defaults(func=run_train)

    from vlkd_ros.pipeline import BuildGraspConfig

    b = sub.add_parser("build-grasp-model", help="render the training scenes, train the shipped grasp recipe, install "
                                                 "it as the default model",
                       description="One command for the default model `vlkd serve` uses: `vlkd collect clutter "
                                   "--config clutter_train`, `vlkd train-grasp --config configs/grasp_default.yaml`, "
                                   "then the model dir is copied to vlkd_ros/models/grasp_default (or --out). "
                                   "Example: vlkd build-grasp-model --out runs/my_default")
    b.add_argument("--config", help="YAML of BuildGraspConfig settings (flags apply on top)")
    add_config_flags(b, BuildGraspConfig, ("collect_config", "train_config", "data_dir", "workdir", "out", "workers"))
    b.add_argument("overrides", nargs="*", help="training config overrides, e.g. optim.epochs=2")
    b.set_defaults(func=run_build)

    e = sub.add_parser("eval-grasp", help="Table 11: accuracy / F1, zero-shot and k-shot, one row per model",
                       description="Either evaluate model dirs (--model, one row each) or make the whole table from a "
                                   "table config, training rows that have no model yet (--table). Example: vlkd "
                                   "eval-grasp --table configs/grasp_table_offline.yaml train.data.root=data/clutter")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", nargs="+", help="grasp model dir(s) written by `vlkd train-grasp` (OUTPUT/model, or "
                                                 "OUTPUT); each card records its data and teacher")
    what.add_argument("--table", help="table config YAML (training.grasp.eval.GraspTableConfig)")
    e.add_argument("--out", help="output dir for table.md/json (default: the table's out_dir, or MODEL/eval)")
    e.add_argument("overrides", nargs="*", help="table/eval overrides (eval.k_shot=5); `train.`-prefixed ones go to "
                                                "every row's training config (train.data.root=...)")
    e.set_defaults(func=run_eval)

    a = sub.add_parser("add-object", help="teach a grasp model a new object from a few observations",
                       description="Checks the shots (distinct views, no flat or noise frames), finetunes on "
                                   "all but the last ones, validates on those, then swaps the weights and registry "
                                   "entry in the model dir (or its state dir) atomically (nothing is written "
                                   "otherwise). Example: vlkd add-object --model runs/grasp --name 'tea cup' "
                                   "--images a.png b.png c.png d.png e.png")
    a.add_argument("--model", help="grasp model dir, or the run dir holding it as model/ (default: the shipped "
                                   "default model); changed in place unless a state dir is used")
    a.add_argument("--state-dir", help="write the learnt object here and leave the model dir unchanged (default: a "
                                       "per-user dir under $XDG_STATE_HOME/vlkd_ros for the shipped model or a "
                                       "read-only model dir, else the model dir itself)")
    a.add_argument("--name", required=True, help="object name")
    a.add_argument("--images", nargs="+", required=True,
                   help="RGB image files, or episode folders holding one <view>.png per view the model stacks")
    a.add_argument("--description", help="rich description of the object")
    a.add_argument("-k", type=int, default=5, help="minimum number of shots (default 5)")
    a.add_argument("--min-heldout-auc", type=float, default=None,
                   help="least leave-one-out ROC AUC of the shots against the model dir's held-out frames without "
                        "the object for the job to succeed (default 0.75; 0 accepts every fit)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--eval-data", help="clutter dataset dir labelling the object: report its F1 / ROC AUC on the "
                                       "held-out observations (X_ood for OOD objects, else X_id; shots excluded) "
                                       "before and after the job")
    a.set_defaults(func=run_add_object)

    from training.grasp.fewshot import GraspFewShotConfig

    f = sub.add_parser("finetune-grasp", help="finetune a grasp model's weights on a few shots of new objects into a "
                                              "new model dir",
                       description="Offline: finetunes every weight on the shots (replaying the model's training "
                                   "frames), checks the known objects' held-out ROC AUC and each new object's held-out "
                                   "shots, then writes NEW whole (MODEL is never changed; nothing is written when a "
                                   "guard refuses). A node serves NEW once reconfigured to it (model_dir:=NEW). "
                                   "Detector models learn new objects with `vlkd add-object` instead. Example: vlkd "
                                   "finetune-grasp runs/grasp/offline --name 'tea cup' --shots cups/ --out runs/tea")
    f.add_argument("model", help="grasp model dir, or the run dir holding it as model/")
    f.add_argument("--name", action="append", required=True,
                   help="a new object's name; repeat --name NAME --shots ... for several objects")
    f.add_argument("--shots", action="append", nargs="+", required=True,
                   help="the shots of the preceding --name: RGB image files, folders of them, or episode folders "
                        "holding one <view>.png per view the model stacks")
    f.add_argument("--out", required=True, help="the new model dir (must not exist)")
    add_config_flags(f, GraspFewShotConfig, ("steps", "max_drop", "min_heldout_auc", "min_control_gap"),
                     defaults={"steps": None, "max_drop": None, "min_heldout_auc": None, "min_control_gap": None},
                     help={"steps": "finetune steps (default: the model's grasp.json fewshot.steps)",
                           "max_drop": "most the known objects' held-out ROC AUC may fall (default: fewshot.max_drop)",
                           "min_heldout_auc": "least ROC AUC of each new object's held-out shots against the "
                                              "model's held-out frames (default: fewshot.min_heldout_auc)",
                           "min_control_gap": "least mean score of the held-out shots above structureless copies "
                                              "of them (default: fewshot.min_control_gap)"})
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="cpu")
    f.add_argument("overrides", nargs="*", help="more few-shot settings, e.g. lr=0.001 'losses=[{type: asl}]'")
    f.set_defaults(func=run_finetune)


def run_train(args: argparse.Namespace) -> int:
    """Load the config, train, print where the model is."""
    from vlkd_formats.config import load_config
    from training.grasp.train import GraspTrainConfig, train_grasp

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = train_grasp(load_config(GraspTrainConfig, args.config, args.overrides), resume=args.resume)
    print(f"model dir: {out}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    """Build and install the default grasp model; print where it is."""
    from vlkd_formats.config import load_config
    from vlkd_ros.pipeline import BuildGraspConfig, build_grasp_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(BuildGraspConfig, args.config, flag_overrides(args, BuildGraspConfig))
    config.overrides = list(config.overrides) + list(args.overrides)
    out = build_grasp_model(config)
    print(f"default grasp model: {out} (vlkd serve uses it when no --model-dir is given)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Make the table (training missing rows) or evaluate the given model dirs; print the Markdown table."""
    from vlkd_formats.config import load_config
    from training.grasp.eval import (GraspEvalConfig, evaluate_grasp, load_table_config, make_table, table_markdown,
                                     teacher_row)
    from vlkd_formats.atomic_io import atomic_write_json, atomic_write_text

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.table:
        config, train_overrides = load_table_config(args.table, args.overrides)
        if args.out:
            config.out_dir = args.out
        make_table(config, train_overrides)
        out = Path(config.out_dir)
    else:
        stray = [m for m in args.model if "=" in m and not Path(m).exists()]
        if stray:
            raise ValueError(f"{stray} came after --model and were read as model dirs: put dotted overrides before "
                             "--model (vlkd eval-grasp eval.benchmark=DIR --model MODEL)")
        train_overrides = [o[len("train."):] for o in args.overrides if o.startswith("train.")]
        eval_overrides = [o[len("eval."):] for o in args.overrides if o.startswith("eval.")]
        unknown = [o for o in args.overrides if not o.startswith(("train.", "eval."))]
        if unknown:
            raise ValueError(f"with --model, overrides must start with eval. or train.; got {unknown}")
        eval_config = load_config(GraspEvalConfig, None, eval_overrides)
        rows = [{"name": str(m), **evaluate_grasp(m, eval_config, train_overrides)} for m in args.model]
        if eval_config.benchmark and eval_config.teacher_row:
            rows.append(teacher_row(args.model[0], eval_config, train_overrides))
        out = Path(args.out or Path(args.model[0]) / "eval")
        result = {"k_shot": eval_config.k_shot, "rows": rows}
        atomic_write_json(out / "table.json", result)
        atomic_write_text(out / "table.md", table_markdown(result))
    print((out / "table.md").read_text())
    print(f"written: {out / 'table.md'}, {out / 'table.json'}")
    return 0


def run_add_object(args: argparse.Namespace) -> int:
    """Add the object, wait for its job, print the job's outcome."""
    from vlkd_ros.inference import GraspFeasibility, name_quality

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = GraspFeasibility.from_checkpoint(args.model, device=args.device, state_dir=args.state_dir)
    shots = [_read_observation(Path(p), model.views) for p in args.images]
    held_out = _held_out(Path(args.eval_data), args.name, args.images, model.views) if args.eval_data else []
    before = name_quality(model, held_out, args.name) if held_out else None
    if args.min_heldout_auc is not None:
        model.fewshot = replace(model.fewshot, min_heldout_auc=args.min_heldout_auc)
        model.fewshot.validate()
    job = model.add_object(args.name, shots, description=args.description, k=args.k)
    print(f"learning {args.name!r} (answerable zero-shot meanwhile; nothing is written unless it validates): "
          f"job {job.job_id}, {job.message} ...")
    job.wait()
    model.close()
    result = {"state": job.state, "message": job.message, "model_version": model.model_version,
              "written_to": str(model.state_dir or model.model_dir), "report": job.report}
    if held_out:
        after = name_quality(model, held_out, args.name)
        result["held_out"] = {"dataset": args.eval_data, "before": before, "after": after}
    print(json.dumps(result, indent=2))
    if held_out:
        print(f"held-out {args.name!r} on {len(held_out)} observations: F1 {before['f1']:.3f} -> {after['f1']:.3f}, "
              f"ROC AUC {before['auc']:.3f} -> {after['auc']:.3f} (threshold {before['threshold']:.3f} -> "
              f"{after['threshold']:.3f})")
    return 0 if job.state == "succeeded" else 1


def run_finetune(args: argparse.Namespace) -> int:
    """Finetune into the new model dir with a progress bar; print where it is and the guards' figures."""
    from tqdm import tqdm

    from training.grasp.fewshot import GraspFewShotConfig
    from training.grasp.finetune_model import finetune_model_dir
    from vlkd_ros.cli import CLIError

    if len(args.name) != len(args.shots):
        raise CLIError(f"give one --shots list after each --name: got {len(args.name)} names, {len(args.shots)} "
                       "--shots lists")
    if len(set(args.name)) < len(args.name):
        raise CLIError(f"each --name once: got {args.name}")
    stray = [s for shots in args.shots for s in shots if "=" in s and not Path(s).exists()]
    if stray:
        raise CLIError(f"{stray} came after --shots and were read as shots: put settings right after MODEL "
                       "(vlkd finetune-grasp MODEL lr=0.001 --name ...)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = flag_overrides(args, GraspFewShotConfig) + list(args.overrides)
    bars = []  # opened at the first step: what is refused before the finetune prints its one line alone

    def progress(fraction: float) -> None:
        bars[:] = bars or [tqdm(total=1.0, desc="finetune", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")]
        bars[0].update(fraction - bars[0].n)

    try:
        result = finetune_model_dir(args.model, dict(zip(args.name, args.shots)), args.out, overrides, args.seed,
                                    args.device, progress)
    finally:
        for bar in bars:
            bar.close()
    print(json.dumps(result.record["figures"], indent=2))
    print(f"finetuned model dir: {result.out} (added {', '.join(result.record['added'])}; serve it with "
          f"vlkd serve --model-dir {result.out}, or reconfigure a node with model_dir:={result.out})")
    return 0


def _held_out(root: Path, name: str, shot_paths: list[str], views: list[str]) -> list:
    """Episodes of `root` that label `name` (its own split: X_ood for OOD objects, else X_id), minus the shots."""
    from training.grasp.data import GraspDataConfig, load_clutter_data
    from vlkd_formats.object_registry import normalize_name

    data = load_clutter_data(GraspDataConfig(root=str(root), views=views))
    key = normalize_name(name)
    if key not in data.id_objects + data.ood_objects:
        raise ValueError(f"{name!r} is not an object of {root}; its objects are {data.id_objects + data.ood_objects}")
    shot_dirs = {Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent for p in shot_paths}
    split = data.x_ood if key in data.ood_objects else data.x_id
    return [e for e in split if Path(e.images["base_rgb"]).resolve().parent not in shot_dirs]


def _read_observation(path: Path, views: list[str]) -> object:
    """An RGB file (for RGB models) or a folder with <view>.png files (as `vlkd collect clutter` writes)."""
    from training.grasp.data import shot_files
    from vlkd_ros.inference import read_observation

    return read_observation(shot_files(path, views), views)
