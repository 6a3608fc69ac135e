"""Grasp-feasibility inference API: `GraspFeasibility.from_checkpoint(dir).query(images, names)`, and few-shot
learning of new objects in the background (`add_object`) with validate-then-swap and a persisted registry.

Text features of any object name come from the teacher's text tower saved in the model dir, cached per
prompt, so new names need neither the teacher's image tower nor the training data. The serving state (weights,
encoder, registry) is one immutable snapshot replaced by a single reference assignment under a lock: a query
reads it once and never waits for a finetune. Everything few-shot learning writes stays inside the model dir it
serves (weights/, objects/, onnx/, registry.json; the layout is in `vlkd_formats.model_dir`).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import save_weights
from training.grasp.export import export_student_onnx
from training.grasp.fewshot import (GraspFewShotConfig, GraspShots, added_object_thresholds, check_finetune,
                                    finetune_grasp)
from training.grasp.model_dir import GraspModelDir, ReplayBuffer, load_grasp_model_dir
from training.grasp.text import prompt_texts
from training.students import Student
from training.teacher import file_sha256
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.config import from_dict
from vlkd_formats.model_dir import (OBJECTS_DIR, ONNX_DIR, REPLAY_FILE, WEIGHTS_DIR, fewshot_weights_file, onnx_file,
                                    shots_file)
from vlkd_formats.object_registry import ObjectEntry, ObjectRegistry, normalize_name, write_registry
from vlkd_ros.inference.jobs import FewShotJob
from vlkd_ros.inference.onnx_backend import OnnxEncoder

__all__ = ["BACKENDS", "FewShotJob", "GraspFeasibility"]
log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class _Serving:
    """What one query reads: version, registry, torch weights and the encoder that runs them."""

    version: str
    registry: ObjectRegistry
    student: Student
    encoder: Callable[[torch.Tensor], torch.Tensor]


class GraspFeasibility:
    """Is each named object graspable in an observation? Open vocabulary, batched, CPU or GPU.

    `fewshot` holds the settings `add_object` finetunes with (from the model dir's grasp.json); replace it to
    change them for later jobs."""

    def __init__(self, model: GraspModelDir, device: torch.device, backend: str):
        self._root, self._device, self._backend = model.root, device, backend
        self._transform = model.transform()
        self._scorer = model.scorer().to(device).eval().requires_grad_(False)
        self._threshold = float(model.grasp.threshold)
        self._text_config = model.grasp.text_config()
        self.fewshot = from_dict(GraspFewShotConfig, dict(model.grasp.fewshot))
        self._tower = model.text_tower(device)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._text_lock = threading.Lock()
        self._commit_lock = threading.RLock()
        self._replay: ReplayBuffer | None = None
        self._jobs: dict[str, FewShotJob] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._serving = self._snapshot(model.registry, model.student)

    @classmethod
    def from_checkpoint(cls, model_dir: str | os.PathLike, device: str = "cpu", backend: str = "torch"
                        ) -> "GraspFeasibility":
        """Load a grasp model dir (as `vlkd train-grasp` wrote it, with any objects added since), or the run dir
        holding it as `model/`. Backend "onnx" runs the image encoder `vlkd export` wrote for the current weights
        (a ModelDirError says so when there is none); loading never writes into the dir."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
        return cls(load_grasp_model_dir(model_dir, dev), dev, backend)

    @property
    def model_dir(self) -> Path:
        """The model dir this instance serves (and the only place add_object writes to)."""
        return self._root

    @property
    def model_version(self) -> str:
        """'v<n>-<sha8>' of the weights now serving; changes whenever weights are swapped."""
        return self._serving.version

    @property
    def needs_depth(self) -> bool:
        """True when the model stacks depth views (pass dict observations)."""
        return self._transform.needs_depth

    @property
    def image_size(self) -> int:
        """Side of the square model input; any HxW is resized to it."""
        return self._transform.image_size

    @property
    def views(self) -> list[str]:
        """Views the model stacks, in order (keys of a dict observation)."""
        return list(self._transform.views)

    @property
    def threshold(self) -> float:
        """Calibrated decision threshold on the score."""
        return self._threshold

    def objects(self) -> list[tuple[str, str]]:
        """(name, description) of every object in the registry."""
        return [(o.name, o.description) for o in self._serving.registry.objects]

    def query(self, images: Any, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation: {name: {"graspable": bool, "score": float}} for every name."""
        serving = self._serving
        keys = _check_names(names)
        batch = self._prepare(images)
        pos, neg = self._features(keys, serving.registry)
        with torch.inference_mode():
            feats = serving.encoder(batch.to(self._device))
            scores = torch.sigmoid(self._scorer(feats.float(), pos, neg)).cpu()
        thresholds = [self._threshold_of(k, serving.registry) for k in keys]
        return [{name: {"graspable": bool(s >= t), "score": float(s)} for name, s, t in zip(names, row, thresholds)}
                for row in scores.tolist()]

    def threshold_for(self, name: str) -> float:
        """The decision threshold `query` applies to `name`: its own once finetuned, else the model's."""
        return self._threshold_of(normalize_name(name), self._serving.registry)

    def _threshold_of(self, key: str, registry: ObjectRegistry) -> float:
        entry = registry.get(key)
        return self._threshold if entry is None or entry.threshold is None else entry.threshold

    def add_object(self, name: str, images: Any, description: str | None = None, k: int = 5) -> FewShotJob:
        """Register `name` at once (answerable zero-shot), then finetune on its shots in the background.
        Re-adding a known name updates it (description, more shots); every given image is used, at least `k`."""
        key = normalize_name(name)
        if description is not None and not isinstance(description, str):
            raise ValueError(f"description must be a string or None, got {type(description).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        inputs = self._prepare(images)
        if len(inputs) < k:
            raise ValueError(f"add_object({key!r}) needs at least k={k} shots, got {len(inputs)}")
        with self._commit_lock:
            registry = self._serving.registry
            old = registry.get(key)
            entry = old or ObjectEntry(key, source="added")
            if description is not None:
                entry = replace(entry, description=description.strip())
            if entry != old:
                registry = registry.with_object(entry)
                write_registry(self._root, registry)
                self._serving = replace(self._serving, registry=registry)
        job = FewShotJob(uuid.uuid4().hex[:12], key)
        self._jobs[job.job_id] = job
        self._queue.put((job, inputs))
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="vlkd-fewshot", daemon=True)
            self._worker.start()
        return job

    def job(self, job_id: str) -> FewShotJob | None:
        """A few-shot job by id (None if unknown)."""
        return self._jobs.get(job_id)

    def close(self, timeout: float | None = None) -> None:
        """Stop the background worker after the queued jobs."""
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout)

    # -- inputs and text ------------------------------------------------------------------------------------

    def _prepare(self, images: Any) -> torch.Tensor:
        """Validate and transform one observation or a list of them into (B, C, S, S)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given: pass an HxWx3 uint8 array, a dict of views, or a non-empty list")
        out = []
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray):
                if self._transform.views != ["base_rgb"]:
                    raise ValueError(f"this model stacks views {self._transform.views}"
                                     f"{' (depth is required)' if self.needs_depth else ''}: pass a dict "
                                     f"{{view: array}} per observation, not a bare RGB array")
                item = {"base_rgb": item}
            elif not isinstance(item, Mapping):
                raise ValueError(f"image {i} must be an HxWx3 uint8 numpy array or a dict of views, "
                                 f"got {type(item).__name__}")
            try:
                out.append(self._transform(item))
            except ValueError as err:
                raise ValueError(f"image {i}: {err}") from None
        return torch.stack(out)

    def _features(self, keys: list[str], registry: ObjectRegistry) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positive/negative prompt features (N, D) of normalised names, with registry descriptions."""
        descriptions = {k: e.description for k in keys if (e := registry.get(k)) is not None and e.description}
        pos, neg = prompt_texts(keys, self._text_config, descriptions)
        rows = [_join(t) for t in pos] + ([_join(t) for t in neg] if neg else [])
        texts = dict(zip(rows, pos + (neg or [])))
        with self._text_lock:
            missing = [r for r in dict.fromkeys(rows) if r not in self._text_cache]
            if missing:
                for r, f in zip(missing, self._tower.encode([texts[r] for r in missing])):
                    self._text_cache[r] = f
            feats = torch.stack([self._text_cache[r] for r in rows]).to(self._device)
        return (feats[:len(keys)], feats[len(keys):]) if neg else (feats, None)

    # -- serving snapshots ----------------------------------------------------------------------------------

    def _snapshot(self, registry: ObjectRegistry, student: Student) -> _Serving:
        """The serving state of `registry`'s weights; backend "onnx" loads their export and never writes one."""
        student = student.to(self._device).eval().requires_grad_(False)
        if self._backend == "onnx":
            encoder: Callable[[torch.Tensor], torch.Tensor] = OnnxEncoder(
                self._root / onnx_file(registry.weights_sha256), self._device, self._root, registry.model_version)
        else:
            encoder = student
        return _Serving(registry.model_version, registry, student, encoder)

    # -- few-shot worker ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, inputs = item
            job.state = "running"
            try:
                self._learn(job, inputs)
                job.state, job.progress = "succeeded", 1.0
            except Exception as err:  # a failed job must never take the serving model down
                log.exception("few-shot job %s (%s) failed", job.job_id, job.name)
                job.state, job.message = "failed", f"{type(err).__name__}: {err}"
            finally:
                job.finish()

    def _learn(self, job: FewShotJob, new_inputs: torch.Tensor) -> None:
        serving = self._serving
        registry, key = serving.registry, job.name
        names = registry.names()
        col = names.index(key)
        entry = registry.get(key)
        cfg = self.fewshot
        old_shots = self._load_shots(entry)
        shot_inputs = torch.cat([old_shots, new_inputs])[-cfg.max_shots:]
        shots = _one_column(shot_inputs, len(names), col)
        replay = self._replay_sets(registry, names, skip=key)
        pos, neg = self._features(names, registry)
        tuned = finetune_grasp(serving.student, self._scorer, shots, replay, pos, neg, cfg,
                               seed=registry.weights_version, device=self._device,
                               progress=lambda f: setattr(job, "progress", 0.9 * f))
        buffer, known = self._replay_buffer(), self._replay_columns()
        val_cols = [c for c, n in enumerate(names) if n in known]
        val_targets = buffer.val_targets[:, [known[names[c]] for c in val_cols]]
        check = check_finetune(serving.student, tuned, self._scorer, self._threshold, buffer.val_inputs, val_targets,
                               pos[val_cols], None if neg is None else neg[val_cols], new_inputs, pos[col:col + 1],
                               None if neg is None else neg[col:col + 1], cfg.max_drop, self._device)
        job.report = check.report
        if not check.ok:
            raise RuntimeError(f"validation failed, the previous model keeps serving: {check.reason}")
        job.progress = 0.95
        thresholds = self._added_thresholds(tuned, registry, names, pos, neg, cfg.object_fpr)
        own = thresholds.get(key)
        job.report["threshold"] = self._threshold if own is None else own
        self._commit(job, tuned, shot_inputs, thresholds)

    def _added_thresholds(self, tuned: Student, registry: ObjectRegistry, names: list[str], pos: torch.Tensor,
                          neg: torch.Tensor | None, object_fpr: float) -> dict[str, float | None]:
        """Every added object's own threshold under the new weights (`added_object_thresholds`; None: the model's)."""
        cols = [c for c, name in enumerate(names) if registry.get(name).source == "added"]
        if not cols:
            return {}
        found = added_object_thresholds(tuned, self._scorer, self._replay_buffer().val_inputs, pos[cols],
                                        None if neg is None else neg[cols], object_fpr, self._device)
        return {names[c]: t for c, t in zip(cols, found)}

    def _commit(self, job: FewShotJob, tuned: Student, shot_inputs: torch.Tensor,
                thresholds: dict[str, float | None]) -> None:
        """Write weights, shots and (backend onnx) their ONNX export, then the registry (the commit point), then
        swap the serving snapshot."""
        with self._commit_lock:
            current = self._serving.registry
            n = current.weights_version + 1
            weights_rel = fewshot_weights_file(n)
            atomic_write(self._root / weights_rel, lambda tmp: save_weights(tmp, tuned.state_dict()))
            shots_rel = shots_file(job.name, n)
            atomic_write(self._root / shots_rel,
                         lambda tmp: save_file({"inputs": shot_inputs.half().contiguous()}, tmp))
            entry = replace(current.get(job.name) or ObjectEntry(job.name, source="added"), shots=shots_rel,
                            n_shots=len(shot_inputs), finetuned=True)
            registry = current.with_object(entry)
            for name, threshold in thresholds.items():
                if (other := registry.get(name)) is not None:
                    registry = registry.with_object(replace(other, threshold=threshold))
            registry = registry.with_weights(weights_rel, file_sha256(self._root / weights_rel))
            if self._backend == "onnx":
                export_student_onnx(tuned, self.image_size, self._root / onnx_file(registry.weights_sha256))
            serving = self._snapshot(registry, tuned)
            write_registry(self._root, registry)
            self._serving = serving
            self._prune(registry)
        job.message = f"{job.name!r} learnt from {len(shot_inputs)} shots; serving {registry.model_version}"
        log.info("few-shot job %s: %s", job.job_id, job.message)

    def _prune(self, registry: ObjectRegistry) -> None:
        """Delete weights, shots and ONNX files the registry no longer references."""
        keep = {registry.weights, onnx_file(registry.weights_sha256)} | {o.shots for o in registry.objects if o.shots}
        for folder in (WEIGHTS_DIR, OBJECTS_DIR, ONNX_DIR):
            for path in (self._root / folder).glob("*"):
                rel = f"{folder}/{path.name}"
                if path.is_file() and rel not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)

    def _replay_buffer(self) -> ReplayBuffer:
        if self._replay is None:
            self._replay = ReplayBuffer.load(self._root / REPLAY_FILE)
        return self._replay

    def _replay_columns(self) -> dict[str, int]:
        """Registry name -> column of the replay buffer's targets (the trained objects)."""
        return {normalize_name(n): i for i, n in enumerate(self._replay_buffer().names)}

    def _load_shots(self, entry: ObjectEntry | None) -> torch.Tensor:
        if entry is None or not entry.shots:
            return torch.zeros(0, self._transform.channels, self.image_size, self.image_size)
        return load_file(str(self._root / entry.shots))["inputs"].float()

    def _replay_sets(self, registry: ObjectRegistry, names: list[str], skip: str) -> GraspShots:
        """Training observations (known objects labelled; objects added later are absent there) plus the
        shots of other added objects (only their own column labelled)."""
        buffer, known = self._replay_buffer(), self._replay_columns()
        targets = torch.zeros(len(buffer.inputs), len(names))
        for c, n in enumerate(names):
            if n in known:
                targets[:, c] = buffer.targets[:, known[n]]
        parts = [GraspShots(buffer.inputs, targets, torch.ones_like(targets, dtype=torch.bool), None)]
        for c, entry in enumerate(registry.objects):
            if entry.shots and entry.name != skip:
                parts.append(_one_column(self._load_shots(entry), len(names), c))
        return GraspShots.cat(parts)


def _one_column(inputs: torch.Tensor, n_names: int, col: int) -> GraspShots:
    """Shots of one object: graspable in its own column, other columns unknown (masked out)."""
    targets = torch.zeros(len(inputs), n_names)
    targets[:, col] = 1
    mask = torch.zeros(len(inputs), n_names, dtype=torch.bool)
    mask[:, col] = True
    return GraspShots(inputs, targets, mask, None)


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"names must be a list of object names, got the string {names!r}; use [{names!r}]")
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"names must be a non-empty list of object names, got {names!r}")
    return [normalize_name(n) for n in names]


def _join(texts: list[str]) -> str:
    return "\x1f".join(texts)
