"""`vlkd eval-grasp`: the paper's Table 11 for grasp feasibility: overall accuracy and F1 over present
objects for Y_id on X_id, Y_id on X_ood and Y_ood on X_ood, zero-shot and after k-shot finetuning; one
row per trained model (L_cls, +L_im-cst, +rich descriptions), trained on demand from one table config."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sklearn import metrics

from vlkd_formats.config import apply_overrides, from_dict, load_config
from training.data import DatasetError
from training.feature_cache import teacher_image_features
from training.grasp.data import (ClutterData, Episode, ObjectSplitConfig, base_rgb_images, episode_targets,
                                 load_clutter_data, stack_episodes)
from training.grasp.answer_checks import OTHER_DOMAIN_NAMES, Answers, answer_checks, answer_frames, false_yes
from training.grasp.fewshot import GraspFewShotConfig, GraspShots, added_object_thresholds, finetune_grasp
from training.grasp.losses import build_grasp_loss, needs_teacher_features
from training.grasp.model import GraspScorer, accuracy_score, binary_counts, calibrate_threshold, f1_score, roc_auc
from training.grasp.model_dir import GraspModelDir, load_grasp_model_dir
from training.grasp.regions import teacher_region_features
from training.grasp.train import GraspTrainConfig, train_grasp
from training.students import Student
from training.teacher import Teacher, resolve_device
from vlkd_formats.atomic_io import atomic_write_json, atomic_write_text
from training.model_dir import training_config_tree
from vlkd_formats.model_dir import CARD_FILE, KIND_GRASP, RUN_MODEL_DIR, file_slug
from vlkd_runtime.onnx_session import image_features, onnx_session

log = logging.getLogger(__name__)
COLUMNS = (("x_id", "Y_id on X_id"), ("id_on_ood", "Y_id on X_ood"), ("ood_on_ood", "Y_ood on X_ood"))


@dataclass
class GraspEvalConfig:
    """k shots per OOD object picked from X_ood (the rest is the query set); `fewshot` overrides the model's
    own few-shot settings (grasp.json); replay is drawn from at most `replay_size` training episodes."""

    k_shot: int = 5
    fewshot: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    replay_size: int = 2000
    seed: int = 0
    device: str = "auto"
    benchmark: str | None = None  # a held-out clutter dataset dir (another seed and camera poses): every frame is
    # evaluated (X_id: scenes of Y_id objects only, X_ood: scenes holding a Y_ood object); shots then come from
    # the training dataset's X_ood, so nothing is tuned on the benchmark
    teacher_row: bool = True      # with a benchmark: the teacher's own zero-shot row (its frame embedding)
    encoder: str = "torch"  # the image encoder judged: the weights ("torch") or, for a detector's zero-shot figures,
    # the model dir's ONNX export as the node serves it ("onnx", "onnx-int8": its int8 copy)

    def validate(self) -> None:
        """Check ranges."""
        if self.k_shot < 1 or self.batch_size < 1 or self.replay_size < 0:
            raise ValueError(f"eval needs k_shot >= 1, batch_size >= 1, replay_size >= 0; got {self.k_shot}, "
                             f"{self.batch_size}, {self.replay_size}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"eval.encoder must be one of {ENCODERS}, got {self.encoder!r}")


ENCODERS = ("torch", "onnx", "onnx-int8")


class OnnxStudent(torch.nn.Module):
    """An exported image encoder run by onnxruntime (CPU, one thread per core), called as the student is: what a
    node serving it computes."""

    def __init__(self, path: Path):
        super().__init__()
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `vlkd export --model {path.parent.parent}` first")
        self.session = onnx_session(path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(image_features(self.session, images.cpu().numpy()))


def _default_rows() -> list[dict[str, Any]]:
    return [{"name": "L_cls", "overrides": ["losses=[{type: asl}]"]},
            {"name": "+L_im-cst", "overrides": ["losses=[{type: asl}, {type: im_cst}]"]},
            {"name": "+rich descriptions", "overrides": ["losses=[{type: asl}, {type: im_cst}]",
                                                         "text.use_descriptions=true"]}]


@dataclass
class GraspTableConfig:
    """The table job: a base training config, one row per variant (name + training overrides), where the
    rows' model dirs go (`out_dir/<row>`), whether to retrain rows that already have a model, eval settings."""

    train_config: str | None = "configs/grasp_offline.yaml"
    rows: list[dict[str, Any]] = field(default_factory=_default_rows)
    out_dir: str = "runs/grasp_table"
    retrain: bool = False
    eval: GraspEvalConfig = field(default_factory=GraspEvalConfig)

    def validate(self) -> None:
        """Rows need unique names and override lists."""
        names = [r.get("name") for r in self.rows]
        if not self.rows or None in names or len(set(names)) != len(names):
            raise ValueError(f"table rows need unique names, got {names}")
        for r in self.rows:
            if set(r) - {"name", "overrides"} or not isinstance(r.get("overrides", []), list):
                raise ValueError(f"a table row is {{name, overrides: [key=value, ...]}}, got {r}")
        self.eval.validate()


def load_table_config(path: str | None, overrides: list[str]) -> tuple[GraspTableConfig, list[str]]:
    """Table config from YAML + overrides; overrides starting with `train.` go (without it) to every row's
    training config and are returned separately."""
    train = [o[len("train."):] for o in overrides if o.startswith("train.")]
    rest = [o for o in overrides if not o.startswith("train.")]
    return load_config(GraspTableConfig, path, rest), train


def select_support(episodes: list[Episode], names: list[str], k: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded support set holding >= k observations where each of `names` is graspable; returns (support,
    query) episode indices. Raises ValueError when an object has too few such observations."""
    grasp, _ = episode_targets(episodes, names)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(episodes), generator=g).tolist()
    chosen: list[int] = []
    for j, name in enumerate(names):
        have = int(grasp[chosen, j].sum()) if chosen else 0
        for i in order:
            if have >= k:
                break
            if i not in chosen and grasp[i, j] > 0:
                chosen.append(i)
                have += 1
        if have < k:
            raise ValueError(f"object {name!r} is graspable in only {have} X_ood observations; {k}-shot evaluation "
                             f"needs at least {k} (plus some left for the query set)")
    query = [i for i in range(len(episodes)) if i not in set(chosen)]
    return sorted(chosen), query


def column_metrics(scores: torch.Tensor, graspable: torch.Tensor, present: torch.Tensor,
                   threshold: float | torch.Tensor | None) -> dict[str, float]:
    """Overall accuracy over all (observation, object) pairs next to the accuracy of answering "no" to every
    pair (`always_no`); F1 of 'graspable' over the pairs whose object is present (`f1`) and over all pairs
    (`f1_all`); ROC AUC of the scores over all pairs (`auc`, free of the threshold); the share of observations
    whose every pair is answered right (`frames_right`). `threshold`: one, one per column (1, M), or None (no
    calibration: the thresholded figures are NaN)."""
    target, nan = graspable > 0.5, float("nan")
    result = {"accuracy": nan, "always_no": float((~target).float().mean()) if target.numel() else nan, "f1": nan,
              "f1_all": nan, "auc": roc_auc(scores, target.float()), "frames_right": nan,
              "pairs": int(scores.numel()), "present_pairs": int(present.sum()), "frames": int(len(target))}
    if threshold is not None:
        pred = scores >= threshold
        all_counts = binary_counts(pred, target)
        result.update(accuracy=accuracy_score(all_counts), f1=f1_score(binary_counts(pred, target, present)),
                      f1_all=f1_score(all_counts),
                      frames_right=float((pred == target).all(1).float().mean()) if len(target) else nan)
    return result


def evaluate_grasp(model_dir: str | Path, config: GraspEvalConfig, train_overrides: list[str] | None = None
                   ) -> dict[str, Any]:
    """Zero-shot and k-shot metrics of one grasp model dir (or the run dir holding it) on its dataset (from the
    training config in its card + overrides); with a benchmark but without the training dataset, the benchmark's
    zero-shot metrics alone (k shots come from the training dataset's X_ood)."""
    config.validate()
    device = resolve_device(config.device)
    gm = load_grasp_model_dir(model_dir, device)
    train_config = card_train_config(gm.root, train_overrides or [])
    if config.encoder != "torch":
        if not (config.benchmark and gm.grasp.head == "detector"):
            raise ValueError(f"eval.encoder={config.encoder} judges a detector's export on a benchmark "
                             "(eval.benchmark=DIR); k-shot figures finetune the weights: use eval.encoder=torch")
        gm = replace(gm, student=OnnxStudent(gm.onnx_path(int8=config.encoder == "onnx-int8")))
    if config.benchmark and gm.grasp.head == "detector":
        log.warning("a detector model learns new objects as query vectors (add_object), not by finetuning: "
                    "zero-shot figures on the benchmark only")
        return _benchmark_zero_shot(gm, config, train_config, device,
                                    f"no {config.k_shot}-shot figures: a detector model learns new objects as query "
                                    "vectors (`vlkd add-object`), which this table does not measure yet")
    if config.benchmark and not Path(train_config.data.root).is_dir():
        log.warning("training dataset %s is missing: zero-shot figures on the benchmark only (%s)",
                    train_config.data.root, render_hint(train_config.data.root))
        return _benchmark_zero_shot(gm, config, train_config, device,
                                    f"no {config.k_shot}-shot figures: their shots come from the training dataset "
                                    f"{train_config.data.root}, which is missing "
                                    f"({render_hint(train_config.data.root)})")
    if gm.grasp.head == "detector":
        raise ValueError(f"{model_dir} is a detector model: evaluate it on a held-out benchmark "
                         "(eval.benchmark=data/clutter_heldout); its few-shot path is add_object's query vectors, "
                         "not the finetune this evaluation measures")
    data = _training_data(train_config)
    if data.id_objects != gm.card.labels["id"] or data.ood_objects != gm.card.labels["ood"]:
        raise ValueError(f"model {model_dir} was trained with Y_id {gm.card.labels['id'][:4]}..., Y_ood "
                         f"{gm.card.labels['ood'][:4]}...; the dataset split gives {data.id_objects[:4]}..., "
                         f"{data.ood_objects[:4]}...")
    if not data.x_ood:
        raise ValueError(f"{data.root} has no X_ood episodes (split {train_config.data.ood_split!r})")
    names = data.id_objects + data.ood_objects
    n_id = len(data.id_objects)
    pos, neg = label_text(gm)
    support, query = select_support(data.x_ood, data.ood_objects, config.k_shot, config.seed)
    if config.benchmark:
        bench = benchmark_data(config.benchmark, train_config, data.id_objects, data.ood_objects, data.root)
        x_id, x_query = bench.train + bench.x_id, bench.x_ood
    else:
        x_id, x_query = data.x_id, [data.x_ood[i] for i in query]
    fewshot = from_dict(GraspFewShotConfig, {**gm.grasp.fewshot, **config.fewshot}, "eval.fewshot.")
    fewshot.validate()
    tuned = finetune_grasp(gm.student, gm.scorer(), *_fewshot_sets(gm, data, support, names, fewshot, config,
                                                                 train_config), pos, neg, fewshot, config.seed, device)
    result: dict[str, Any] = {
        "model_dir": str(model_dir), "k_shot": config.k_shot, "threshold": gm.grasp.threshold,
        "objects": {"id": data.id_objects, "ood": data.ood_objects, "split": data.split_source},
        "benchmark": config.benchmark,
        "counts": {"x_id": len(x_id), "x_ood": len(data.x_ood), "x_ood_support": len(support),
                   "x_ood_query": len(x_query)},
        "fewshot": {"steps": fewshot.steps, "params": fewshot.params, "lr": fewshot.lr},
        "zero_shot": {}, "few_shot": {}, "per_object": {}}
    # After the finetune each OOD object gets its own threshold, as `add_object` gives an added object.
    tuned_t = _object_thresholds(tuned, gm, pos[n_id:], None if neg is None else neg[n_id:], fewshot, device)
    result["few_shot_thresholds"] = dict(zip(data.ood_objects, tuned_t[0].tolist()))
    for mode, student in (("zero_shot", gm.student), ("few_shot", tuned)):
        t_ood = tuned_t if mode == "few_shot" else torch.full((1, len(data.ood_objects)), gm.grasp.threshold)
        result[mode], per_object = _student_metrics(student, gm, x_id, x_query, t_ood, config, device)
        for name, m in per_object.items():
            result["per_object"].setdefault(name, {})[mode] = m
    raised = [n for n, m in result["per_object"].items() if m["few_shot"]["f1_all"] > m["zero_shot"]["f1_all"]]
    result["fewshot_raised_f1"] = {"objects": raised, "share": len(raised) / max(len(result["per_object"]), 1)}
    return result


def _student_metrics(student: Student, gm: GraspModelDir, x_id: list[Episode], x_query: list[Episode],
                     t_ood: torch.Tensor, config: GraspEvalConfig, device: torch.device
                     ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The three columns' metrics of one student (Y_id at the model's threshold, Y_ood at `t_ood` (1, M)) and
    each Y_ood object's own metrics on `x_query`."""
    id_objects, ood_objects = gm.card.labels["id"], gm.card.labels["ood"]
    n_id, names = len(id_objects), id_objects + ood_objects
    pos, neg = label_text(gm)
    other_pos, other_neg = _other_domain_text(gm)
    pos_all = torch.cat([pos, other_pos])
    neg_all = None if neg is None else torch.cat([neg, other_neg])
    a_id = answer_frames(student, gm.scorer(), x_id, gm.transform(), pos_all, neg_all, config.batch_size, device)
    a_ood = answer_frames(student, gm.scorer(), x_query, gm.transform(), pos_all, neg_all, config.batch_size, device)
    s_id, s_ood = a_id.scores[:, :n_id], a_ood.scores[:, :len(names)]
    g_id, p_id = episode_targets(x_id, id_objects)
    g_ood, p_ood = episode_targets(x_query, names)
    t = gm.grasp.threshold
    columns = {"x_id": column_metrics(s_id, g_id, p_id, t),
               "id_on_ood": column_metrics(s_ood[:, :n_id], g_ood[:, :n_id], p_ood[:, :n_id], t),
               "ood_on_ood": column_metrics(s_ood[:, n_id:], g_ood[:, n_id:], p_ood[:, n_id:], t_ood)}
    columns["x_id"].update(answer_checks(_columns(a_id, 0, n_id), x_id, id_objects, t))
    columns["id_on_ood"].update(answer_checks(_columns(a_ood, 0, n_id), x_query, id_objects, t))
    columns["ood_on_ood"].update(answer_checks(_columns(a_ood, n_id, len(names)), x_query, ood_objects, t_ood))
    other = false_yes(torch.cat([a_id.scores[:, len(names):], a_ood.scores[:, len(names):]]), t)
    for c in columns.values():
        c["other_false_yes"], c["other_pairs"] = other["false_yes"], other["pairs"]
    per_object = {name: column_metrics(s_ood[:, n_id + j:n_id + j + 1], g_ood[:, n_id + j:n_id + j + 1],
                                       p_ood[:, n_id + j:n_id + j + 1], float(t_ood[0, j]))
                  for j, name in enumerate(ood_objects)}
    return columns, per_object


def _benchmark_zero_shot(gm: GraspModelDir, config: GraspEvalConfig, train_config: GraspTrainConfig,
                         device: torch.device, note: str) -> dict[str, Any]:
    """The model's zero-shot metrics on every benchmark frame at its own threshold, from the model dir alone;
    `note` says why there are no k-shot figures."""
    id_objects, ood_objects = gm.card.labels["id"], gm.card.labels["ood"]
    bench = benchmark_data(str(config.benchmark), train_config, id_objects, ood_objects, None)
    x_id, x_query = bench.train + bench.x_id, bench.x_ood
    zero, per_object = _student_metrics(gm.student, gm, x_id, x_query,
                                        torch.full((1, len(ood_objects)), gm.grasp.threshold), config, device)
    return {"model_dir": str(gm.root), "encoder": config.encoder, "k_shot": config.k_shot,
            "threshold": gm.grasp.threshold,
            "objects": {"id": id_objects, "ood": ood_objects, "split": "the model card"},
            "benchmark": config.benchmark,
            "counts": {"x_id": len(x_id), "x_ood": 0, "x_ood_support": 0, "x_ood_query": len(x_query)},
            "zero_shot": zero, "few_shot": None, "per_object": {n: {"zero_shot": m} for n, m in per_object.items()},
            "note": note}


def render_hint(root: str) -> str:
    """How to render a missing clutter dataset dir: the shipped collection config named like it, if any."""
    from sim.config import ClutterConfig
    from vlkd_formats.config import packaged_config_dir

    shipped = packaged_config_dir(ClutterConfig)
    name = Path(root).name
    if shipped is not None and (shipped / f"{name}.yaml").is_file():
        return f"render it with `vlkd collect clutter --config {name} --out {root}`"
    return f"render it with `vlkd collect clutter --out {root}` and the settings it was trained on"


def _training_data(train_config: GraspTrainConfig) -> ClutterData:
    """The model's training dataset; a missing one is named with the command that renders it."""
    if not Path(train_config.data.root).is_dir():
        raise DatasetError(f"the model's training dataset {train_config.data.root} does not exist: "
                           f"{render_hint(train_config.data.root)}, or pass eval.benchmark=DIR for the zero-shot "
                           "figures on a benchmark alone")
    return load_clutter_data(train_config.data)


def benchmark_data(root: str, train_config: GraspTrainConfig, id_objects: list[str], ood_objects: list[str],
                   train_root: Path | None) -> ClutterData:
    """The held-out benchmark dataset with the training data's object split and views."""
    if train_root is not None and Path(root).resolve() == Path(train_root).resolve():
        raise ValueError(f"eval.benchmark {root} is the training dataset; render a held-out one (vlkd collect "
                         "clutter --config clutter_heldout)")
    split = ObjectSplitConfig(mode="explicit", id=list(id_objects), ood=list(ood_objects))
    bench = load_clutter_data(replace(train_config.data, root=str(root), split=split))
    if not bench.x_ood or not (bench.train or bench.x_id):
        raise ValueError(f"benchmark {root} needs both X_id and X_ood frames; it has {len(bench.train + bench.x_id)}"
                         f" and {len(bench.x_ood)}")
    return bench


def teacher_row(model_dir: str | Path, config: GraspEvalConfig, train_overrides: list[str] | None = None
                ) -> dict[str, Any]:
    """The teacher's own zero-shot answers on the benchmark: its embedding of each whole base-camera frame against
    the model's prompt pair, scored like the student (the model's logit scale), at a threshold calibrated on the
    training dataset's held-out X_id frames; without the training dataset, the threshold-free figures alone."""
    device = resolve_device(config.device)
    gm = load_grasp_model_dir(model_dir, device)
    train_config = card_train_config(gm.root, train_overrides or [])
    id_objects, ood_objects = gm.card.labels["id"], gm.card.labels["ood"]
    data = _training_data(train_config) if Path(train_config.data.root).is_dir() else None
    bench = benchmark_data(str(config.benchmark), train_config, id_objects, ood_objects,
                           data.root if data else None)
    teacher = Teacher(train_config.teacher)
    cache = train_config.teacher.cache_dir
    pos, neg = label_text(gm)
    n_id = len(id_objects)
    scorer = GraspScorer(gm.grasp.logit_scale, 0.0)

    def scores(episodes: list[Episode], desc: str) -> torch.Tensor:
        feats = teacher_image_features(teacher, base_rgb_images(episodes), cache, 0.0, desc=desc).features
        with torch.no_grad():
            return torch.sigmoid(scorer(feats, pos, neg))

    threshold = None
    if data is not None:
        calib = data.x_id or data.train
        threshold, _ = calibrate_threshold(scores(calib, "teacher (calibration)")[:, :n_id],
                                           episode_targets(calib, id_objects)[0], "f1")
    x_id, x_ood = bench.train + bench.x_id, bench.x_ood
    s_id, s_ood = scores(x_id, "teacher (benchmark X_id)"), scores(x_ood, "teacher (benchmark X_ood)")
    g_id, p_id = episode_targets(x_id, id_objects)
    g_ood, p_ood = episode_targets(x_ood, id_objects + ood_objects)
    zero = {"x_id": column_metrics(s_id[:, :n_id], g_id, p_id, threshold),
            "id_on_ood": column_metrics(s_ood[:, :n_id], g_ood[:, :n_id], p_ood[:, :n_id], threshold),
            "ood_on_ood": column_metrics(s_ood[:, n_id:], g_ood[:, n_id:], p_ood[:, n_id:], threshold)}
    row = {"name": f"teacher ({train_config.teacher.model}, whole frame)", "zero_shot": zero, "few_shot": None,
           "threshold": threshold, "counts": {"x_id": len(x_id), "x_ood_query": len(x_ood), "x_ood_support": 0},
           "benchmark": config.benchmark,
           "crop_top1": crop_top1(teacher, x_id + x_ood, id_objects, ood_objects, pos, cache)}
    if threshold is None:
        row["note"] = (f"ROC AUC only: its threshold is calibrated on the training dataset {train_config.data.root}, "
                       f"which is missing ({render_hint(train_config.data.root)})")
    return row


def crop_top1(teacher: Teacher, episodes: list[Episode], id_objects: list[str], ood_objects: list[str],
              text: torch.Tensor, cache: str, desc: str = "teacher region features (benchmark)") -> dict[str, float]:
    """How well the teacher knows the objects as the cameras see them: top-1 accuracy of each visible object's
    crop (training.grasp.regions) against the names of its own part (`id`: Y_id among Y_id, `ood`: Y_ood among
    Y_ood) and against all names (`id_all`, `ood_all`), and the crops counted (`crops_id`, `crops_ood`); `text`
    holds one row per name, Y_id then Y_ood."""
    regions = teacher_region_features(teacher, episodes, cache, desc=desc)
    names = id_objects + ood_objects
    n_id = len(id_objects)
    truth: dict[str, list[int]] = {"id": [], "ood": [], "id_all": [], "ood_all": []}
    guess: dict[str, list[int]] = {key: [] for key in truth}
    for i, ep in enumerate(episodes):
        for k, name in enumerate(ep.objects):
            if not bool(regions.valid[i, k]):
                continue
            j = names.index(name)
            part, lo, hi = ("id", 0, n_id) if j < n_id else ("ood", n_id, len(names))
            sims = regions.features[i, k] @ text.T
            truth[part].append(j)
            guess[part].append(lo + int(sims[lo:hi].argmax()))
            truth[part + "_all"].append(j)
            guess[part + "_all"].append(int(sims.argmax()))
    result = {key: float(metrics.accuracy_score(truth[key], guess[key])) if truth[key] else float("nan")
              for key in truth}
    return {**result, "crops_id": float(len(truth["id"])), "crops_ood": float(len(truth["ood"]))}


def _object_thresholds(student: Student, gm: GraspModelDir, pos: torch.Tensor, neg: torch.Tensor | None,
                       fewshot: GraspFewShotConfig, device: torch.device) -> torch.Tensor:
    """(1, M) thresholds of M objects learnt from shots, as `add_object` sets them (`added_object_thresholds`
    on the model's held-out frames; the model's threshold where that gives none)."""
    found = added_object_thresholds(student, gm.scorer(), gm.replay().val_inputs, pos, neg, fewshot.object_fpr,
                                    device)
    return torch.tensor([[gm.grasp.threshold if t is None else t for t in found]])


def _columns(answers: Answers, lo: int, hi: int) -> Answers:
    """The answers to names lo..hi."""
    return Answers(answers.scores[:, lo:hi], None if answers.boxes is None else answers.boxes[:, lo:hi])


def _other_domain_text(gm: GraspModelDir) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's prompt features of OTHER_DOMAIN_NAMES, from its own text encoder and prompt settings."""
    return gm.name_features(list(OTHER_DOMAIN_NAMES))


def card_train_config(model_dir: str | Path, overrides: list[str]) -> GraspTrainConfig:
    """The training config recorded in the model dir's card, with `overrides`."""
    raw = apply_overrides(training_config_tree(model_dir, KIND_GRASP), overrides)
    config = from_dict(GraspTrainConfig, raw)
    config.validate()
    return config


def label_text(gm: GraspModelDir) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's prompt features of its Y_id then Y_ood names (positive, and negative or None)."""
    t = gm.text_features
    neg = torch.cat([t["id_neg"], t["ood_neg"]]) if "id_neg" in t else None
    return torch.cat([t["id"], t["ood"]]), neg


def _fewshot_sets(gm: GraspModelDir, data: ClutterData, support: list[int], names: list[str],
                  fewshot: GraspFewShotConfig, config: GraspEvalConfig, train_config: GraspTrainConfig
                  ) -> tuple[GraspShots, GraspShots]:
    """Support episodes (all objects labelled) and replayed training episodes (Y_ood absent there)."""
    transform = gm.transform()
    g = torch.Generator().manual_seed(config.seed)
    replay_idx = torch.randperm(len(data.train), generator=g)[:config.replay_size].tolist()
    sup_eps, rep_eps = [data.x_ood[i] for i in support], [data.train[i] for i in replay_idx]
    t_sup = t_rep = None
    if needs_teacher_features(build_grasp_loss(fewshot.losses)):
        teacher = Teacher(train_config.teacher)
        cache = train_config.teacher.cache_dir
        t_sup = teacher_image_features(teacher, base_rgb_images(sup_eps), cache, 0.0, desc="teacher (support)").features
        t_rep = teacher_image_features(teacher, base_rgb_images(rep_eps), cache, 0.0, desc="teacher (replay)").features
    sets = []
    for eps, feats in ((sup_eps, t_sup), (rep_eps, t_rep)):
        targets, _ = episode_targets(eps, names)
        known = torch.ones_like(targets, dtype=torch.bool)
        sets.append(GraspShots(stack_episodes(eps, transform), targets, known, feats))
    return sets[0], sets[1]


def make_table(config: GraspTableConfig, train_overrides: list[str] | None = None) -> dict[str, Any]:
    """Train each row's model (run dir `out_dir/<row>`, model dir `out_dir/<row>/model`) unless its model dir is
    complete (or `retrain`), evaluate all, write table.md/json."""
    config.validate()
    out = Path(config.out_dir)
    rows: list[dict[str, Any]] = []
    for row in config.rows:
        run_dir = out / file_slug(row["name"], "row")
        model_dir = run_dir / RUN_MODEL_DIR
        overrides = list(train_overrides or []) + list(row.get("overrides", [])) + [f"output_dir={run_dir}"]
        if config.retrain or not (model_dir / CARD_FILE).is_file():
            log.info("training row %r into %s", row["name"], model_dir)
            train_grasp(load_config(GraspTrainConfig, config.train_config, overrides))
        rows.append({"name": row["name"], **evaluate_grasp(model_dir, config.eval, list(train_overrides or []))})
    if config.eval.benchmark and config.eval.teacher_row:
        rows.append(teacher_row(model_dir, config.eval, list(train_overrides or [])))
    result = {"k_shot": config.eval.k_shot, "rows": rows}
    atomic_write_json(out / "table.json", result)
    atomic_write_text(out / "table.md", table_markdown(result))
    return result


def table_markdown(result: dict[str, Any]) -> str:
    """Table 11's layout, cells zero-shot / k-shot: (a) ROC AUC over all (frame, object) pairs, (b) F1 of
    "graspable" over all pairs (the paper's F1 over present objects is `f1` in the JSON), (c) overall accuracy
    next to answering "no" to every pair, (d) the share of frames answered fully right, (e) where right answers
    point and false "yes" on absent and other-domain names. `result` is {"k_shot", "rows": [{"name", "zero_shot",
    "few_shot", "counts"}]} (a row's few_shot may be None: the teacher's)."""
    k = result["k_shot"]
    pct = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"  # noqa: E731
    lines = []
    for title, key in (("(a) ROC AUC over all (frame, object) pairs (threshold-free)", "auc"),
                       ("(b) F1 of graspable over all pairs (every object asked on every frame)", "f1_all"),
                       ("(c) Overall accuracy (answering \"no\" to every pair)", "accuracy"),
                       ("(d) Frames answered fully right", "frames_right")):
        lines += [f"{title}, zero-shot / {k}-shot", "",
                  "| method | " + " | ".join(label for _, label in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for r in result["rows"]:
            cells = []
            for c, _ in COLUMNS:
                few = "n/a" if r.get("few_shot") is None else pct(r["few_shot"][c][key])
                cell = f"{pct(r['zero_shot'][c][key])} / {few}"
                if key == "accuracy":
                    cell += f" ({pct(r['zero_shot'][c]['always_no'])})"
                cells.append(cell)
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["(e) Zero-shot answers as a user sees them: right \"yes\" located inside the object's visible box "
              "(+2 px) / \"yes\" to names absent from the frame / \"yes\" to 20 names from other domains", "",
              "| method | " + " | ".join(label for _, label in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for r in result["rows"]:
        z = r["zero_shot"]
        lines.append(f"| {r['name']} | " + " | ".join(
            f"{pct(z[c].get('hit'))} / {pct(z[c].get('absent_false_yes'))} / {pct(z[c].get('other_false_yes'))}"
            for c, _ in COLUMNS) + " |")
    lines.append("")
    c = result["rows"][0]["counts"]
    where = (f"the held-out benchmark {result['rows'][0]['benchmark']}" if result["rows"][0].get("benchmark")
             else "the training dataset's held-out splits")
    shots = (f"{k}-shot columns after finetuning on {c['x_ood_support']} support frames ({k} shots per Y_ood object, "
             "from the training dataset's X_ood). After the finetune each Y_ood object is decided at its own threshold "
             "(fewshot.object_fpr), as objects added at run time are.") if c["x_ood_support"] else "zero-shot only."
    lines.append(f"On {where}: X_id {c['x_id']} frames; X_ood {c['x_ood_query']} frames; {shots}")
    for r in result["rows"]:
        if r.get("note"):
            lines.append(f"{r['name']}: {r['note']}.")
        if r.get("fewshot_raised_f1"):
            raised = r["fewshot_raised_f1"]
            lines.append(f"{r['name']}: the {k}-shot finetune raised the F1 (over all frames) of "
                         f"{len(raised['objects'])} of {len(r['per_object'])} Y_ood objects.")
        if r.get("crop_top1"):
            lines.append(f"{r['name']} on each visible object's crop instead of the whole frame: top-1 "
                         f"{pct(r['crop_top1']['id'])}% among Y_id names, {pct(r['crop_top1']['ood'])}% among Y_ood "
                         f"names, {pct(r['crop_top1']['id_all'])}% / {pct(r['crop_top1']['ood_all'])}% among all "
                         "names (what region distillation passes on).")
    return "\n".join(lines) + "\n"
