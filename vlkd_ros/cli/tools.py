"""`vlkd export`, `vlkd split`, `vlkd describe`, `vlkd students`: model and dataset tools."""
from __future__ import annotations

import argparse
import json

from vlkd_ros.cli import CLIError


COMMANDS = ("export", "split", "describe", "students")  # the subcommands `register` adds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the tool subcommands."""
    p = sub.add_parser("export", help="ONNX export of a model dir, verified against PyTorch",
                       description="A distill model dir: the student with its label-text matrix into MODEL/export "
                                   "(export.json lists the files). A grasp model dir: the image encoder of its current "
                                   "weights into MODEL/onnx/student-<sha16>.onnx (backend onnx) and its int8 copy "
                                   "student-<sha16>.int8.onnx (backend onnx-int8, when faithful), each with its "
                                   "features of the held-out frames (onnx/heldout-<sha16>[.int8].safetensors). "
                                   "Example: vlkd export --model runs/distill/model")
    p.add_argument("--model", required=True, help="model dir (or the run dir holding it as model/)")
    p.add_argument("--out", help="output dir of a distill export (default MODEL/export)")
    p.add_argument("--if-missing", action="store_true",
                   help="a grasp model dir: do nothing when both encoders of its current weights and their "
                        "held-out features are there (install.sh exports the shipped model this way)")
    p.set_defaults(func=run_export)

    s = sub.add_parser("split", help="seeded ID/OOD label split of an ImageFolder (|Y_id| = |Y_ood|)",
                       description="Example: vlkd split --source images/ --out data/mysplit --seed 0")
    s.add_argument("--source", required=True, help="folder with one sub-folder of images per label")
    s.add_argument("--out", required=True, help="new dataset dir: train/ val_on_train/ val/ (symlinks) + split.json")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--id-holdout", type=float, default=0.2, help="fraction of each ID label held out as X_id")
    s.set_defaults(func=run_split)

    d = sub.add_parser("describe", help="generate label descriptions with a local text-generation model",
                       description="Example: vlkd describe --dataset data/classification --lm models/gpt2 "
                                   "--out descriptions.yaml")
    d.add_argument("--dataset", required=True, help="dataset dir (labels from train/ and val/)")
    d.add_argument("--lm", required=True, help="local transformers model folder (no download happens)")
    d.add_argument("--out", required=True, help="YAML file to write (use as text.descriptions)")
    d.add_argument("--max-new-tokens", type=int, default=40)
    d.set_defaults(func=run_describe)

    t = sub.add_parser("students", help="list student architectures")
    t.set_defaults(func=lambda args: print("\n".join(__import__("training.students").students.list_students())))


def run_export(args: argparse.Namespace) -> int:
    """Export and print the verification report (a grasp model dir: its ONNX image encoder)."""
    from vlkd_formats.model_dir import KIND_GRASP, read_card

    if read_card(args.model).kind == KIND_GRASP:
        from training.grasp.model_dir import export_onnx

        if args.out:
            raise CLIError("a grasp model dir exports into its own onnx/ folder (where backend onnx loads it): "
                           "drop --out")
        from vlkd_runtime.grasp_dir import read_served_model_dir

        served = read_served_model_dir(args.model)
        have = [p for q in (False, True) for p in (served.onnx_path(int8=q), served.held_out_features_path(q))]
        if args.if_missing and all(p.is_file() for p in have):
            print(json.dumps({"files": [str(p) for p in have], "exported": False}, indent=2))
            return 0
        out = export_onnx(args.model)
        print(json.dumps({"files": [str(p) for p in out.files], "exported": True,
                          "max_abs_diff": {"onnx": out.max_abs_diff}, "int8_median_cosine": out.int8_cosine},
                         indent=2))
        return 0
    from training.export import export_model

    report = export_model(args.model, args.out)
    print(json.dumps({"files": report["files"], "max_abs_diff": report["max_abs_diff"]}, indent=2))
    return 0


def run_split(args: argparse.Namespace) -> int:
    """Make the split layout and print the split."""
    from training.split import materialize_split

    split = materialize_split(args.source, args.out, args.seed, args.id_holdout)
    for part in ("id", "ood"):
        print(f"Y_{part} ({len(split[part])}): {', '.join(split[part])}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    """Generate and write descriptions for every label of a dataset."""
    from training.data import DataConfig, load_distill_data
    from training.describe import generate_descriptions, write_descriptions

    data = load_distill_data(DataConfig(root=args.dataset))
    labels = data.id_labels + data.ood_labels
    path = write_descriptions(generate_descriptions(labels, args.lm, max_new_tokens=args.max_new_tokens), args.out)
    print(f"wrote {len(labels)} descriptions to {path}")
    return 0
