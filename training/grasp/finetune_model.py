"""The offline weight finetune of `vlkd finetune-grasp`: a grasp model dir + a few shots of each new object -> a new
model dir whose weights were finetuned on them (`finetune_grasp`, balanced replay of the model's training frames),
written only when its guards pass. Serving learns new objects as query vectors instead (`vlkd_runtime.query_fit`,
the weights unchanged); a node serves the new dir once reconfigured to it (its `model_dir` parameter).

The guards (`GraspFewShotConfig`): the known objects' ROC AUC on the model's held-out frames may fall by at most
`max_drop`; of each new object's shots the last `holdout` share (at least one) is kept out of the finetune, and those
must outrank the held-out frames (which never hold an added object) with ROC AUC >= `min_heldout_auc` and score
`min_control_gap` above structureless copies of themselves (a flat frame of their mean colour, noise of their
colours: a finetune that learnt a colour or a texture scores those as high). Every added object then gets its own
threshold (`added_object_thresholds`)."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.grasp.data import read_view, shot_files
from training.grasp.fewshot import GraspFewShotConfig, GraspShots, added_object_thresholds, finetune_grasp
from training.grasp.model import roc_auc, score_inputs
from training.grasp.model_dir import (GraspModelDir, ReplayBuffer, load_grasp_model_dir, read_grasp_card,
                                      write_grasp_model_dir)
from training.model_dir import ModelCard
from training.students import Student
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.config import apply_overrides, from_dict, to_dict
from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import TEXT_ENCODER_DIR, resolve_model_dir, shots_file
from vlkd_formats.object_registry import ObjectEntry, normalize_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FINETUNES = "finetunes"  # model.json's `info` key: one record per finetune that led to the dir, oldest first


class FinetuneRefused(VlkdError, ValueError):
    """A guard refused the finetuned weights; nothing was written."""


@dataclass
class FinetuneResult:
    """The new model dir and what its card records of the finetune (`info["finetunes"][-1]`)."""

    out: Path
    record: dict[str, Any]


def finetune_model_dir(model_dir: str | os.PathLike, shots: Mapping[str, Sequence[str | os.PathLike]],
                       out: str | os.PathLike, overrides: Sequence[str] = (), seed: int = 0,
                       device: str | torch.device = "cpu", progress: Callable[[float], None] | None = None
                       ) -> FinetuneResult:
    """Finetune the grasp model dir `model_dir` (never changed) on the shots of each new name in `shots` (per name:
    image files, episode folders holding <view>.png, or folders of image files; `read_shots`) with its grasp.json's
    few-shot settings plus `overrides` (`max_drop=0.1`), and write the new model dir `out` (it must not exist) whole
    or not at all. FinetuneRefused names each guard that failed, with its figures."""
    root, out = resolve_model_dir(model_dir), Path(out)
    if read_grasp_card(root).head == "detector":
        raise ValueError(f"{root} is a detector model, whose new objects are query vectors, not finetuned weights: "
                         "use `vlkd add-object` or the node's AddObject action instead")
    if out.exists():
        raise ValueError(f"{out} already exists: name a new dir for the finetuned model")
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{out} is inside {root}, which a finetune never changes: write the new model elsewhere")
    gm = load_grasp_model_dir(root, device)
    learnt = [o.name for o in gm.registry.objects if o.query]
    if learnt:
        raise ValueError(f"{root} serves {learnt} as query vectors fitted on its current weights, which a finetune "
                         "changes: remove them (remove_object) or finetune from a model dir without them")
    config = from_dict(GraspFewShotConfig, apply_overrides(dict(gm.grasp.fewshot), list(overrides)), "fewshot.")
    config.validate()
    new = _new_names(gm, list(shots))
    transform = gm.transform()
    observations = {key: read_shots(shots[name], transform.views) for key, name in zip(new, shots)}
    held = {key: _held_out(len(obs), config.holdout, key) for key, obs in observations.items()}
    inputs = {key: torch.stack([transform(o) for o in obs]) for key, obs in observations.items()}
    entries = list(gm.registry.objects) + [ObjectEntry(key, source="added", n_shots=len(inputs[key]), finetuned=True)
                                           for key in new]
    names = [e.name for e in entries]
    pos, neg = gm.name_features(names, {e.name: e.description for e in entries if e.description})
    train_shots = [_one_column(x[:len(x) - held[key]], len(names), names.index(key)) for key, x in inputs.items()]
    buffer = gm.replay()
    tuned = finetune_grasp(gm.student, gm.scorer(), GraspShots.cat(train_shots), _replay(gm, buffer, entries), pos,
                           neg, config, seed, device, progress)
    figures, problems = _judge(gm, buffer, tuned, entries, {k: x[len(x) - held[k]:] for k, x in inputs.items()}, pos,
                               neg, config, device)
    if problems:
        raise FinetuneRefused(f"{out} was not written: " + "; ".join(problems))
    added = [i for i, e in enumerate(entries) if e.source == "added"]
    thresholds = added_object_thresholds(tuned, gm.scorer(), buffer.val_inputs, pos[added],
                                         None if neg is None else neg[added], config.object_fpr, device)
    earlier = gm.card.info.get(FINETUNES, [])
    for i, t in zip(added, thresholds):  # shots files numbered by the finetune that added them
        entries[i] = replace(entries[i], threshold=t,
                             shots=entries[i].shots or shots_file(entries[i].name, len(earlier) + 1))
    record = {"from": str(root), "from_model_version": gm.registry.model_version,
              "added": {key: {"shots": len(inputs[key]), "held_out": held[key]} for key in new},
              "settings": to_dict(config), "seed": seed, "figures": figures}
    card = replace(gm.card, info={**gm.card.info, FINETUNES: [*earlier, record]})
    kept = {e.shots: inputs.get(e.name) for e in entries if e.shots}
    _write_whole(out, lambda tmp: _write(tmp, gm, buffer, tuned.cpu(), card, entries, kept))
    return FinetuneResult(out, record)


def read_shots(paths: Sequence[str | os.PathLike], views: list[str]) -> list[dict[str, np.ndarray]]:
    """The observations {view: array} of shot paths: an RGB image file (RGB-only models), an episode folder holding
    <view>.png per view the model stacks (as `vlkd collect clutter` writes), or a folder of RGB image files."""
    out = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "base_rgb.png").is_file():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"shot folder {path} holds no base_rgb.png nor any "
                                        f"{'/'.join(IMAGE_SUFFIXES)} image")
            out += read_shots(files, views)
        elif path.is_file() and views != ["base_rgb"]:
            raise ValueError(f"shot {path} is one image, but the model stacks {views}: give episode folders "
                             "holding <view>.png per view")
        else:
            out.append({v: read_view(v, f) for v, f in shot_files(path, views).items()})
    return out


def structureless_copies(inputs: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two copies of transformed observations (N, C, S, S) without their structure: each channel flat at its mean,
    and seeded Gaussian noise of each channel's mean and standard deviation."""
    mean = inputs.mean(dim=(2, 3), keepdim=True)
    std = inputs.std(dim=(2, 3), keepdim=True) if inputs.shape[2] * inputs.shape[3] > 1 else torch.zeros_like(mean)
    noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(seed))
    return mean.expand_as(inputs).contiguous(), mean + std * noise


def _new_names(gm: GraspModelDir, names: list[str]) -> list[str]:
    """The normalised new names; ValueError for none, a repeated one or one the model already knows."""
    keys = [normalize_name(n) for n in names]
    if not keys:
        raise ValueError("no new object names given")
    twice = sorted({k for k in keys if keys.count(k) > 1})
    known = [k for k in keys if gm.registry.get(k) is not None]
    if twice or known:
        raise ValueError(f"new names must be new and each given once: {twice or known} "
                         f"{'repeated' if twice else f'already known to {gm.root}'}")
    return keys


def _held_out(n: int, fraction: float, name: str) -> int:
    """How many of an object's n shots are kept out of the finetune to judge it: max(1, round(n * fraction)),
    leaving at least one to train on."""
    if n < 2:
        raise ValueError(f"{name!r} needs at least 2 shots (one is held out to judge the finetune), got {n}")
    return min(n - 1, max(1, round(n * fraction)))


def _one_column(inputs: torch.Tensor, n_names: int, col: int) -> GraspShots:
    """Shots of one object: graspable in its own column, other columns unknown (masked out)."""
    targets = torch.zeros(len(inputs), n_names)
    targets[:, col] = 1
    mask = torch.zeros(len(inputs), n_names, dtype=torch.bool)
    mask[:, col] = True
    return GraspShots(inputs, targets, mask, None)


def _replay(gm: GraspModelDir, buffer: ReplayBuffer, entries: list[ObjectEntry]) -> GraspShots:
    """The model's replay frames (trained objects labelled; objects added later are absent there) plus the shots of
    objects an earlier finetune added (only their own column labelled)."""
    names = [e.name for e in entries]
    known = {normalize_name(n): i for i, n in enumerate(buffer.names)}
    targets = torch.zeros(len(buffer.inputs), len(names))
    for c, name in enumerate(names):
        if name in known:
            targets[:, c] = buffer.targets[:, known[name]]
    parts = [GraspShots(buffer.inputs, targets, torch.ones_like(targets, dtype=torch.bool), None)]
    for c, entry in enumerate(entries):
        if entry.shots:
            parts.append(_one_column(load_file(str(gm.files.path(entry.shots)))["inputs"].float(), len(names), c))
    return GraspShots.cat(parts)


def _judge(gm: GraspModelDir, buffer: ReplayBuffer, tuned: Student, entries: list[ObjectEntry],
           held: dict[str, torch.Tensor], pos: torch.Tensor, neg: torch.Tensor | None, config: GraspFewShotConfig,
           device: str | torch.device) -> tuple[dict[str, Any], list[str]]:
    """The guards' figures on `buffer`'s held-out frames and what each failing guard says (none: the finetuned
    weights may be written)."""
    scorer, names = gm.scorer(), [e.name for e in entries]
    known = {normalize_name(n): i for i, n in enumerate(buffer.names)}
    cols = [c for c, n in enumerate(names) if n in known]
    val_pos, val_neg = pos[cols], None if neg is None else neg[cols]
    targets = buffer.val_targets[:, [known[names[c]] for c in cols]]
    old, new = (roc_auc(score_inputs(s, scorer, buffer.val_inputs, val_pos, val_neg, device=device), targets)
                for s in (gm.student, tuned))
    figures: dict[str, Any] = {"known": {"old_auc": _figure(old), "new_auc": _figure(new),
                                         "held_out_frames": len(buffer.val_inputs)}, "objects": {}}
    problems = []
    if math.isnan(old) or math.isnan(new):
        if config.max_drop < 1:
            problems.append(f"the known objects' ROC AUC cannot be measured on the model's {len(buffer.val_inputs)} "
                            f"held-out frames (max_drop={config.max_drop:g} needs it; max_drop=1 skips the guard)")
    elif new < old - config.max_drop - 1e-9:
        problems.append(f"known objects' ROC AUC on held-out frames fell from {old:.3f} to {new:.3f}, more than "
                        f"max_drop={config.max_drop:g}")
    for key, shots in held.items():
        c = names.index(key)
        one_pos, one_neg = pos[c:c + 1], None if neg is None else neg[c:c + 1]
        mine = score_inputs(tuned, scorer, torch.cat([shots, buffer.val_inputs]), one_pos, one_neg, device=device)[:, 0]
        shot_scores, absent = mine[:len(shots)], mine[len(shots):]
        control = torch.maximum(*[score_inputs(tuned, scorer, x, one_pos, one_neg, device=device)[:, 0]
                                  for x in structureless_copies(shots)])
        auc = roc_auc(mine, torch.cat([torch.ones(len(shots)), torch.zeros(len(absent))]))
        gap = float((shot_scores - control).mean())
        figures["objects"][key] = {"held_out_shots": len(shots), "held_out_score": float(shot_scores.mean()),
                                   "held_out_auc": _figure(auc), "control_gap": gap}
        if not torch.isfinite(mine).all() or not torch.isfinite(control).all():
            problems.append(f"the finetuned model scores {key!r} non-finite")
        if not auc >= config.min_heldout_auc:
            problems.append(f"the {len(shots)} held-out shot(s) of {key!r} do not stand out from the model's "
                            f"held-out frames, which never hold it (ROC AUC {auc:.3f} < min_heldout_auc="
                            f"{config.min_heldout_auc:g}): do all shots show the same object?")
        if gap < config.min_control_gap:
            problems.append(f"the held-out shots of {key!r} score only {gap:.3f} above structureless copies of "
                            f"themselves (< min_control_gap={config.min_control_gap:g}): it learnt a colour or a "
                            "texture, not an object")
    return figures, problems


def _figure(value: float) -> float | None:
    """A figure for the card's JSON: None for NaN."""
    return None if math.isnan(value) else value


def _write_whole(out: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a fresh folder beside `out`, then rename it to `out`: a crash leaves no half-written `out`
    (only a `.<name>.*.partial` folder), and a failed write leaves nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        tmp.chmod(0o755)
        write(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(tmp: Path, gm: GraspModelDir, buffer: ReplayBuffer, tuned: Student, card: ModelCard,
           entries: list[ObjectEntry], kept: dict[str, torch.Tensor | None]) -> None:
    """The new model dir in `tmp`: every part a trained one has (the ONNX export of the new weights among them), the
    model's text encoder and replay frames, and each added object's shots (an earlier finetune's copied)."""
    write_grasp_model_dir(tmp, tuned, card, gm.text_features, gm.grasp, gm.root / TEXT_ENCODER_DIR, buffer, entries)
    for rel, inputs in kept.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        if inputs is None:
            shutil.copy2(gm.files.path(rel), tmp / rel)
        else:
            atomic_write(tmp / rel, lambda t, x=inputs: save_file({"inputs": x.half().contiguous()}, t))
