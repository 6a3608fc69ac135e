"""`vlkd eval`: ID accuracy, 0-shot OOD, k-shot OOD (finetune and retrieval baseline) and the paper's metrics."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import metrics
from vlkd_formats.config import apply_overrides, from_dict, merge_trees, read_yaml_tree
from training.data import DataConfig, ImageDataset, ImageList, image_transform
from training.distill import DistillConfig, prepare
from training.feature_cache import teacher_image_features
from training.fewshot import FewShotConfig, ShotSet, finetune_few_shot
from training.model_dir import load_model_dir, training_config_tree
from training.grasp.data import GraspDataConfig, base_rgb_images, episode_targets, load_clutter_data
from training.grasp.model import roc_auc
from training.grasp.text import POSITIVE_PROMPT
from training.teacher import Teacher, TeacherConfig
from vlkd_formats.atomic_io import atomic_write_json, atomic_write_text
from vlkd_formats.model_dir import KIND_DISTILL

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Evaluation settings: shots per OOD label, few-shot schedule, metric neighbourhood sizes."""

    k_shot: int = 5
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    neigh_k: int = 10
    vlalign_k: int = 5
    batch_size: int = 64
    seed: int = 0
    plots: bool = True

    def validate(self) -> None:
        """Check ranges."""
        if self.k_shot < 1:
            raise ValueError(f"eval.k_shot must be >= 1, got {self.k_shot}")
        self.fewshot.validate()


def load_eval_configs(model_dir: str | Path, config_path: str | None = None, overrides: list[str] | None = None
                      ) -> tuple[EvalConfig, DistillConfig]:
    """The model dir's training config (recorded in its card), updated by an optional YAML (with an `eval:`
    section) and overrides."""
    raw = training_config_tree(model_dir, KIND_DISTILL)
    merge_trees(raw, read_yaml_tree(config_path) if config_path else {})
    apply_overrides(raw, overrides or [])
    eval_config = from_dict(EvalConfig, raw.pop("eval", {}) or {}, "eval.")
    distill_config = from_dict(DistillConfig, raw)
    distill_config.validate()
    eval_config.validate()
    return eval_config, distill_config


def teacher_zero_shot(model: str, data_root: str, cache_dir: str = "runs/cache") -> dict[str, float]:
    """Zero-shot accuracy of an open_clip teacher on a dataset's X_id (val_on_train) and X_ood (val)."""
    config = DistillConfig(teacher=TeacherConfig(model=model, pretrained=None, cache_dir=cache_dir),
                           data=DataConfig(root=data_root))
    prep = prepare(config)
    out = {}
    for name, images, text in (("id", prep.data.x_id, prep.text_id), ("ood", prep.data.x_ood, prep.text_ood)):
        feats = teacher_image_features(prep.teacher, images, config.teacher.cache_dir, desc=f"teacher ({name})")
        out[name] = accuracy(feats.features, text, torch.tensor(images.targets))
    return out


def teacher_presence_auc(model: str, clutter_root: str, cache_dir: str = "runs/cache",
                         prompt: str = POSITIVE_PROMPT) -> dict[str, float]:
    """Zero-shot ROC AUC of an open_clip teacher for "object X is in this scene" on a clutter dataset's X_id and
    X_ood frames: cosine of each base-camera frame with `prompt` for every object (Y_id and Y_ood), against
    which objects the scene holds."""
    teacher = Teacher(TeacherConfig(model=model, pretrained=None, cache_dir=cache_dir))
    data = load_clutter_data(GraspDataConfig(root=clutter_root))
    names = data.id_objects + data.ood_objects
    text = teacher.encode_texts([[prompt.format(name)] for name in names])
    out = {}
    for part, episodes in (("id", data.x_id), ("ood", data.x_ood)):
        feats = teacher_image_features(teacher, base_rgb_images(episodes), cache_dir, desc=f"teacher ({part})")
        out[part] = roc_auc(feats.features @ text.T, episode_targets(episodes, names)[1].float())
    return out


def accuracy(features: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of nearest label text by cosine similarity."""
    if len(targets) == 0:
        return float("nan")
    return float(((features @ text.T).argmax(1) == targets).float().mean())


@torch.no_grad()
def encode(model: nn.Module, images: ImageList, transform: Any, batch_size: int, device: torch.device,
           desc: str) -> torch.Tensor:
    """Student features of every image (N, D), batched, on the CPU."""
    model.eval()
    loader = DataLoader(ImageDataset(images, transform), batch_size=batch_size)
    out = [model(x.to(device)).cpu() for x, _, _ in tqdm(loader, desc=desc, unit="batch")]
    return torch.cat(out) if out else torch.zeros(0, 1)


def load_images(images: ImageList, transform: Any) -> torch.Tensor:
    """Preprocessed image tensor (N, C, H, W) of an image list."""
    return torch.stack([ImageDataset(images, transform)[i][0] for i in range(len(images))])


def split_shots(targets: list[int], k: int, seed: int) -> tuple[list[int], list[int]]:
    """Pick k shots per label (seeded); return (support indices, query indices). Each label keeps >= 1 query."""
    g = torch.Generator().manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_label.setdefault(t, []).append(i)
    support, query = [], []
    for label, idx in sorted(by_label.items()):
        if len(idx) <= k:
            raise ValueError(f"OOD label #{label} has {len(idx)} images; {k}-shot evaluation needs at least {k + 1}")
        order = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        support += order[:k]
        query += order[k:]
    return sorted(support), sorted(query)


def evaluate(model_dir: str | Path, config: EvalConfig, distill_config: DistillConfig,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the full evaluation of a trained model dir; write eval.json, eval.md and plots into `out_dir`."""
    config.validate()
    out = Path(out_dir or Path(model_dir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(distill_config)
    device = prep.teacher.device
    student, card, text = load_model_dir(model_dir, device, KIND_DISTILL)
    if card.labels["id"] != prep.data.id_labels or card.labels["ood"] != prep.data.ood_labels:
        raise ValueError(f"model {model_dir} was trained on labels {card.labels['id'][:5]}..., "
                         f"the dataset has {prep.data.id_labels[:5]}...")
    text_id, text_ood = prep.text_id, prep.text_ood
    transform = image_transform(card.image_size, tuple(card.mean), tuple(card.std))
    data = prep.data
    cache, maxbad = distill_config.teacher.cache_dir, distill_config.data.max_corrupt_fraction
    t_id = teacher_image_features(prep.teacher, data.x_id, cache, maxbad, desc="teacher features (X_id)").features
    t_ood = teacher_image_features(prep.teacher, data.x_ood, cache, maxbad, desc="teacher features (X_ood)").features
    s_id = encode(student, data.x_id, transform, config.batch_size, device, "student X_id")
    s_ood = encode(student, data.x_ood, transform, config.batch_size, device, "student X_ood")
    y_id, y_ood = torch.tensor(data.x_id.targets), torch.tensor(data.x_ood.targets)

    support, query = split_shots(data.x_ood.targets, config.k_shot, config.seed)
    q = torch.tensor(query)
    n_id = len(data.id_labels)
    shots = ShotSet(load_images(data.x_ood.subset(support), transform),
                    torch.tensor([data.x_ood.targets[i] + n_id for i in support]), t_ood[support])
    replay_idx = prep.image_features.valid.nonzero().flatten().tolist()
    g = torch.Generator().manual_seed(config.seed)
    replay_idx = [replay_idx[i] for i in torch.randperm(len(replay_idx), generator=g)[:2000].tolist()]
    replay = ShotSet(load_images(data.train.subset(replay_idx), transform),
                     torch.tensor([data.train.targets[i] for i in replay_idx]),
                     prep.image_features.features[replay_idx])
    tuned = finetune_few_shot(student, shots, replay, torch.cat([text_id, text_ood]), config.fewshot,
                              seed=config.seed, device=device)
    s_query_tuned = encode(tuned, data.x_ood.subset(query), transform, config.batch_size, device, "k-shot X_ood")
    prototypes = torch.nn.functional.normalize(
        torch.stack([s_ood[[i for i in support if data.x_ood.targets[i] == c]].mean(0)
                     for c in range(len(data.ood_labels))]), dim=-1)

    all_text = torch.cat([text_id, text_ood])
    result: dict[str, Any] = {
        "model_dir": str(model_dir),
        "k_shot": config.k_shot,
        "counts": {"x_id": len(data.x_id), "x_ood": len(data.x_ood), "x_ood_query": len(query),
                   "y_id": n_id, "y_ood": len(data.ood_labels)},
        "student": {
            "id": accuracy(s_id, text_id, y_id),
            "ood_0shot": accuracy(s_ood[q], text_ood, y_ood[q]),
            "ood_kshot": accuracy(s_query_tuned, text_ood, y_ood[q]),
            "ood_kshot_retrieval": accuracy(s_ood[q], prototypes, y_ood[q]),
        },
        "teacher": {"id": accuracy(t_id, text_id, y_id), "ood_0shot": accuracy(t_ood[q], text_ood, y_ood[q])},
        "metrics": {
            "x_ood": {"m_rel": metrics.m_rel(s_ood, t_ood), "m_neigh": metrics.m_neigh(s_ood, t_ood, config.neigh_k),
                      "m_vlalign": metrics.m_vlalign(s_ood, t_ood, all_text, config.vlalign_k)},
        },
        "text_space": {
            "singular_values": metrics.text_singular_values(all_text, top=20).tolist(),
            "mean_pairwise_cosine": metrics.mean_pairwise_cosine(all_text),
        },
    }
    if len(data.x_id) > 1:
        result["metrics"]["x_id"] = {"m_rel": metrics.m_rel(s_id, t_id),
                                     "m_neigh": metrics.m_neigh(s_id, t_id, config.neigh_k),
                                     "m_vlalign": metrics.m_vlalign(s_id, t_id, all_text, config.vlalign_k)}
    atomic_write_json(out / "eval.json", result)
    atomic_write_text(out / "eval.md", markdown_report(result))
    if config.plots:
        from training.plots import plot_embeddings, plot_singular_values

        plot_singular_values(result["text_space"]["singular_values"], out / "text_singular_values.png")
        plot_embeddings(s_ood, t_ood, y_ood, data.ood_labels, out / "embedding_x_ood.png")
    return result


def markdown_report(result: dict[str, Any]) -> str:
    """The three-number table plus metrics, as Markdown."""
    s, t, k = result["student"], result["teacher"], result["k_shot"]
    pct = lambda v: "n/a" if v != v else f"{100 * v:.1f}"  # noqa: E731 (nan-safe percentage)
    lines = [f"| model | ID | 0-shot OOD | {k}-shot OOD (finetune) | {k}-shot OOD (retrieval) |",
             "|---|---|---|---|---|",
             f"| student | {pct(s['id'])} | {pct(s['ood_0shot'])} | {pct(s['ood_kshot'])} | "
             f"{pct(s['ood_kshot_retrieval'])} |",
             f"| teacher | {pct(t['id'])} | {pct(t['ood_0shot'])} | - | - |", "",
             "| split | M_rel | M_neigh | M_vlalign |", "|---|---|---|---|"]
    for split, m in result["metrics"].items():
        lines.append(f"| {split} | {m['m_rel']:.3f} | {m['m_neigh']:.3f} | {m['m_vlalign']:.2f} |")
    sv = ", ".join(f"{v:.3f}" for v in result["text_space"]["singular_values"][:5])
    lines += ["", f"Text space: top singular values {sv}; mean pairwise cosine "
              f"{result['text_space']['mean_pairwise_cosine']:.3f}"]
    return "\n".join(lines) + "\n"
