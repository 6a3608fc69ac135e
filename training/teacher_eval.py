"""`vlkd eval-teacher`: what an open_clip teacher knows zero-shot, each figure beside chance: on a clutter dataset
the top-1 naming of each visible object's crop and the whole-frame "X is here" ROC AUC, on a classification
dataset the zero-shot accuracy of X_id among Y_id and X_ood among Y_ood."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training.data import DataConfig, DatasetError, load_distill_data
from training.evaluate import teacher_zero_shot
from training.feature_cache import teacher_image_features, teacher_text_features
from training.grasp.data import (Episode, ObjectSplitConfig, base_rgb_images, episode_targets, read_episodes,
                                 resolve_object_split)
from training.grasp.eval import crop_top1
from training.grasp.model import roc_auc
from training.grasp.text import POSITIVE_PROMPT
from training.teacher import SHIPPED_TEACHERS, Teacher, TeacherConfig, TeacherLoadError
from training.text import LabelTextConfig, label_texts
from vlkd_formats.dataset_dir import INFO_FILE, read_dataset_info

CROP_TEMPLATE = LabelTextConfig().templates[0]  # a crop is named as classification names an image
KINDS = ("clutter", "classification")


def teacher_model_name(name_or_dir: str) -> str:
    """The open_clip model name of a teacher given as a shipped name, a `local-dir:` / `hf-hub:` name or a folder
    holding `open_clip_config.json` and weights."""
    if name_or_dir in SHIPPED_TEACHERS or name_or_dir.startswith(("local-dir:", "hf-hub:")):
        return name_or_dir
    folder = Path(name_or_dir)
    if not folder.is_dir():
        raise TeacherLoadError(f"teacher {name_or_dir!r} is neither a shipped teacher ({', '.join(SHIPPED_TEACHERS)})"
                               " nor a folder holding open_clip_config.json and weights")
    if not (folder / "open_clip_config.json").is_file():
        raise TeacherLoadError(f"teacher folder {folder} has no open_clip_config.json: not an open_clip local-dir "
                               "model (`vlkd pretrain-teacher` writes one)")
    return f"local-dir:{folder}"


def dataset_kind(root: str | Path) -> str:
    """'clutter' or 'classification' for a dataset dir (dataset.json's kind; without one, an ImageFolder layout
    with train/ is classification)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset dir {root} does not exist")
    if (root / INFO_FILE).is_file():
        kind = read_dataset_info(root).kind
    else:
        kind = "classification" if (root / "train").is_dir() else "none"
    if kind not in KINDS:
        raise DatasetError(f"{root} is neither a clutter dataset dir (`vlkd collect clutter`) nor a classification "
                           f"one (train/ val_on_train/ val/); its kind is {kind!r}")
    return kind


def presence_auc(teacher: Teacher, episodes: list[Episode], id_objects: list[str], ood_objects: list[str],
                 cache_dir: str, prompt: str = POSITIVE_PROMPT) -> dict[str, float]:
    """ROC AUC of "`prompt` with X" over every (frame, name) pair, Y_id names (`id`) and Y_ood names (`ood`)
    apart: each whole base-camera frame's cosine with the prompt of each name, against whether the frame holds it."""
    names = id_objects + ood_objects
    text = teacher_text_features(teacher, [[prompt.format(name)] for name in names], cache_dir)
    frames = teacher_image_features(teacher, base_rgb_images(episodes), cache_dir, desc="teacher frames").features
    scores, present = frames @ text.T, episode_targets(episodes, names)[1].float()
    n_id = len(id_objects)
    return {"id": roc_auc(scores[:, :n_id], present[:, :n_id]), "ood": roc_auc(scores[:, n_id:], present[:, n_id:])}


def clutter_figures(teacher: Teacher, root: str, cache_dir: str, splits: list[str] | None = None) -> dict[str, Any]:
    """Crop top-1 (among its part's names and among all names) and presence ROC AUC over every frame of a clutter
    dataset dir (of `splits`; default all), with the dataset's Y_id / Y_ood object split."""
    info = read_dataset_info(root)
    episodes = [ep for split, eps in read_episodes(Path(root), info, ["base_rgb"]).items()
                if splits is None or split in splits for ep in eps]
    if not episodes:
        raise DatasetError(f"clutter dataset {root} lists no frames in its manifest (splits: {splits or 'all'})")
    id_objects, ood_objects, source = resolve_object_split(info, ObjectSplitConfig())
    text = teacher_text_features(teacher, label_texts(id_objects + ood_objects, LabelTextConfig()), cache_dir)
    crops = crop_top1(teacher, episodes, id_objects, ood_objects, text, cache_dir, desc="teacher crops")
    n_id, n_ood = len(id_objects), len(ood_objects)
    return {"root": str(root), "kind": "clutter", "frames": len(episodes),
            "objects": {"id": id_objects, "ood": ood_objects, "split": source},
            "prompts": {"crop": CROP_TEMPLATE, "presence": POSITIVE_PROMPT},
            "crops": {"id": int(crops["crops_id"]), "ood": int(crops["crops_ood"])},
            "crop_top1_part": {"id": crops["id"], "ood": crops["ood"]},
            "crop_top1_all": {"id": crops["id_all"], "ood": crops["ood_all"]},
            "presence_auc": presence_auc(teacher, episodes, id_objects, ood_objects, cache_dir),
            "chance": {"crop_top1_part": {"id": 1 / n_id, "ood": 1 / n_ood},
                       "crop_top1_all": {"id": 1 / (n_id + n_ood), "ood": 1 / (n_id + n_ood)},
                       "presence_auc": {"id": 0.5, "ood": 0.5}}}


def classification_figures(model: str, root: str, cache_dir: str) -> dict[str, Any]:
    """Zero-shot accuracy of X_id among the Y_id names and of X_ood among the Y_ood names of a classification
    dataset dir (training.evaluate.teacher_zero_shot)."""
    data = load_distill_data(DataConfig(root=root))
    n_id, n_ood = len(data.id_labels), len(data.ood_labels)
    return {"root": str(root), "kind": "classification", "images": {"id": len(data.x_id), "ood": len(data.x_ood)},
            "labels": {"id": n_id, "ood": n_ood}, "zero_shot": teacher_zero_shot(model, root, cache_dir),
            "chance": {"zero_shot": {"id": 1 / n_id, "ood": 1 / n_ood}}}


def evaluate_teacher(teacher: str, roots: list[str], cache_dir: str = "runs/cache") -> dict[str, Any]:
    """The figures of one teacher (see `teacher_model_name`) on each dataset dir; every dir and the teacher are
    checked before any feature is computed."""
    if not roots:
        raise DatasetError("no dataset dir to evaluate the teacher on")
    model = teacher_model_name(teacher)
    kinds = [dataset_kind(root) for root in roots]
    loaded = Teacher(TeacherConfig(model=model, pretrained=None, cache_dir=cache_dir))
    datasets = [clutter_figures(loaded, root, cache_dir) if kind == "clutter" else
                classification_figures(model, root, cache_dir) for root, kind in zip(roots, kinds)]
    return {"teacher": teacher, "model": model, "weights": loaded.fingerprint()["weights"], "datasets": datasets}


FIGURES = {"clutter": (("crop_top1_part", "crop top-1 among its part's names", True),
                       ("crop_top1_all", "crop top-1 among all names", True),
                       ("presence_auc", "whole-frame presence ROC AUC", False)),
           "classification": (("zero_shot", "zero-shot accuracy (X_id among Y_id, X_ood among Y_ood)", True),)}


def teacher_table(result: dict[str, Any]) -> str:
    """`evaluate_teacher`'s figures as a Markdown table, each beside chance, with what each dataset holds."""
    def show(value: float, percent: bool) -> str:
        return "n/a" if value != value else f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    lines = [f"Teacher {result['teacher']} ({result['model']})", "",
             "| dataset | figure | Y_id | Y_ood | chance Y_id / Y_ood |", "|---|---|---|---|---|"]
    notes = []
    for d in result["datasets"]:
        for key, title, percent in FIGURES[d["kind"]]:
            chance = d["chance"][key]
            lines.append(f"| {d['root']} | {title} | {show(d[key]['id'], percent)} | {show(d[key]['ood'], percent)} "
                         f"| {show(chance['id'], percent)} / {show(chance['ood'], percent)} |")
        if d["kind"] == "clutter":
            notes.append(f"{d['root']}: {d['frames']} frames, {d['crops']['id']} / {d['crops']['ood']} visible Y_id / "
                         f"Y_ood object crops (boxes grown 25%), {len(d['objects']['id'])} / "
                         f"{len(d['objects']['ood'])} names (split: {d['objects']['split']}); crops named as "
                         f"{d['prompts']['crop']!r}, presence asked as {d['prompts']['presence']!r}.")
        else:
            notes.append(f"{d['root']}: {d['images']['id']} X_id / {d['images']['ood']} X_ood images, "
                         f"{d['labels']['id']} / {d['labels']['ood']} labels.")
    return "\n".join(lines + [""] + notes) + "\n"
