"""Grasp-feasibility inference API: `GraspFeasibility.from_checkpoint(dir).query(images, names)`, and few-shot
learning of new objects in the background (`add_object`: a new object is a new query vector fitted on the student's
embeddings of its shots, `vlkd_runtime.query_fit`; the weights never change, so every other object's answers stay
bit-identical), validated on held-out shots, then swapped in with a persisted registry.

Text features of any object name come from the teacher's text tower saved in the model dir, cached per
prompt, so new names need neither the teacher's image tower nor the training data. The serving state (weights,
encoder, registry, the added objects' query vectors) is one immutable snapshot replaced by a single reference
assignment under a lock: a query reads it once and never waits for a job. Everything few-shot learning writes
(objects/, registry.json, the writer lock; the layout is in `vlkd_formats.model_dir`) goes to one dir: the state dir overlaying
the model dir (`vlkd_formats.state_dir`; given, or the per-user default for the shipped default model and for a
model dir that is not writable), else the model dir itself.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import uuid
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.grasp.model_dir import (GraspModelDir, ReplayBuffer, base_state_card, load_grasp_model_dir,
                                      served_registry)
from training.grasp.text import prompt_texts
from training.students import Student
from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.model_dir import (OBJECTS_DIR, ONNX_DIR, REGISTRY_FILE, REPLAY_FILE, WEIGHTS_DIR, onnx_file,
                                    resolve_model_dir, shots_file)
from vlkd_formats.dir_lock import DirLock
from vlkd_formats.errors import VlkdError
from vlkd_formats.object_registry import (ObjectEntry, ObjectRegistry, normalize_description, normalize_name,
                                          write_registry)
from vlkd_formats.state_dir import write_state_card
from vlkd_ros.inference.jobs import FewShotJob, JobCancelled
from vlkd_ros.inference.model_paths import default_model_dir, state_dir_for
from vlkd_ros.inference.shots import MIN_SHOTS, ShotError, ShotRules, base_rgb, check_shots
from vlkd_ros.inference.onnx_backend import OnnxEncoder
from vlkd_ros.inference.protocol import GraspEmbedding
from vlkd_runtime.query_fit import (Box, QueryFitConfig, calibrate, fit_query, fpr_threshold, negative_rows,
                                    ranking_auc, shot_regions, sigmoid)

__all__ = ["BACKENDS", "Embedding", "FewShotError", "FewShotJob", "GraspFeasibility", "JobQueueFull", "NotRemovable",
           "ShotError", "ValidationFailed"]
log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx")
NAME_CACHE_SIZE = 4096  # (name, description) -> prompt features kept for answers; cleared when full
MAX_JOBS, MAX_JOBS_PER_NAME, JOB_HISTORY = 4, 1, 100
MAX_KEPT_SHOTS = 50  # an object's newest shots kept with its query (for an offline finetune or a refit)
CANCEL_WAIT_S = 10.0  # how long cancel() waits for a running job to reach its next step


class FewShotError(VlkdError, ValueError):
    """add_object cannot start a job on this model dir (its guard cannot run, another writer changed it)."""


class JobQueueFull(FewShotError):
    """add_object refused: as many few-shot jobs as allowed are queued or running (in total or for that name)."""


class NotRemovable(FewShotError):
    """remove_object refused: the name is not an object add_object taught (unknown, or one the model was trained on),
    or a job is learning it now."""


class ValidationFailed(RuntimeError):
    """A fitted query failed its validation on held-out shots: the job fails and nothing changes."""


@dataclass(frozen=True)
class _Serving:
    """What one query reads: version, registry, torch weights and the encoder that runs them, the query vectors of
    objects learnt from shots (name -> (D,)), and the registry's entries by name (for answers that look names up
    without normalising them again)."""

    version: str
    registry: ObjectRegistry
    student: Student
    encoder: Callable[[torch.Tensor], torch.Tensor]
    queries: dict[str, torch.Tensor]
    entries: dict[str, ObjectEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", {o.name: o for o in self.registry.objects})


@dataclass(frozen=True, eq=False)
class Embedding:
    """What `GraspFeasibility.embed` returns and `answer` reads: the student's image features of some
    observations (here global, (B, D); a dense-feature student would keep its feature maps here) and the
    serving snapshot that computed them. Callers treat it as opaque but for `model_version` and `len()`.
    `answers` keeps what `answer` computed per (name, description it was prompted with): every later question
    about the same name on these features is a lookup."""

    features: torch.Tensor
    serving: _Serving
    owner: "GraspFeasibility"
    answers: dict = field(default_factory=dict)  # (name, description) -> (scores per observation, locations | None)

    @property
    def model_version(self) -> str:
        """Version of the weights that computed these features."""
        return self.serving.version

    def __len__(self) -> int:
        return len(self.features)


class GraspFeasibility:
    """Is each named object graspable in an observation? Open vocabulary, batched, CPU or GPU.

    `fewshot` holds the settings `add_object` fits and judges a query vector with (`QueryFitConfig`), `shot_rules`
    what its shots must be (`vlkd_ros.inference.shots`), `max_jobs` / `max_jobs_per_name` how many jobs may be queued or
    running at once; replace them to change later jobs. Nothing is written unless a job succeeds, and then only
    to `state_dir` (or the model dir, when that is None); the first job takes that dir's writer lock
    (`vlkd_formats.dir_lock`) until `close()`."""

    def __init__(self, model: GraspModelDir, device: torch.device, backend: str, threads: int = 0):
        self._root, self._device, self._backend, self._threads = model.root, device, backend, int(threads)
        self._files = model.files
        self._out = model.files.writable
        self._state_card = None if model.files.state is None else base_state_card(model.root)
        self._transform = model.transform()
        self._scorer = model.scorer().to(device).eval().requires_grad_(False)
        self._threshold = float(model.grasp.threshold)
        self._text_config = model.grasp.text_config()
        self.fewshot = QueryFitConfig()
        self._tower = model.text_tower(device)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._name_cache: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._text_lock = threading.Lock()
        self._commit_lock = threading.RLock()
        self._replay: ReplayBuffer | None = None
        self._negatives: tuple[str, torch.Tensor] | None = None  # (weights version, embedded held-out frames)
        self._jobs: dict[str, FewShotJob] = {}
        self._jobs_lock = threading.Lock()
        self._pending: dict[str, ObjectEntry] = {}  # new names with a job in flight: listed, never persisted
        self._writer = DirLock(self._out, "few-shot learner")
        self.shot_rules = ShotRules()
        self.max_jobs, self.max_jobs_per_name = MAX_JOBS, MAX_JOBS_PER_NAME
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._serving = self._snapshot(model.registry, model.student)

    @classmethod
    def from_checkpoint(cls, model_dir: str | os.PathLike | None = None, device: str = "cpu", backend: str = "torch",
                        threads: int = 0, state_dir: str | os.PathLike | None = None) -> "GraspFeasibility":
        """Load a grasp model dir (as `vlkd train-grasp` wrote it, with any objects added since), or the run dir
        holding it as `model/`; None: the shipped default model (`default_model_dir`). `state_dir`: where few-shot
        learning writes, and whose registry and weights are served once it holds them (a StateDirError when it
        belongs to another model); None: the per-user default state dir for the default model or a model dir that
        is not writable (`state_dir_for`), else the model dir itself. Backend "onnx" runs the image encoder
        exported for the current weights (train-grasp, `vlkd export` and every few-shot commit write it; a
        ModelDirError says so when there is none); loading never writes. `threads` > 0: intra-op threads of the
        image encoder (onnxruntime session threads; for backend torch, torch's process-wide thread count); 0
        keeps the backend's default."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
        if threads and backend == "torch":
            torch.set_num_threads(threads)
        root = resolve_model_dir(model_dir or default_model_dir())
        return cls(load_grasp_model_dir(root, dev, state_dir_for(root, state_dir)), dev, backend, threads)

    @property
    def model_dir(self) -> Path:
        """The model dir this instance serves."""
        return self._root

    @property
    def state_dir(self) -> Path | None:
        """The state dir add_object writes to (None: it writes into the model dir)."""
        return self._files.state

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
        """(name, description) of every object in the registry, then of new names a job is learning (answered
        zero-shot with their description meanwhile; gone again if the job does not succeed)."""
        registry, pending = self._serving.registry, self._pending
        return [(o.name, o.description) for o in registry.objects] + [
            (key, e.description) for key, e in pending.items() if registry.get(key) is None]

    def query(self, images: Any, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation: {name: {"graspable": bool, "score": float}} for every name
        (`answer(embed(images), names)`)."""
        _check_names(names)
        return self.answer(self.embed(images), names)

    def embed(self, images: Any) -> Embedding:
        """Run the student once on one observation or a list of them: their image features, to `answer` any
        number of names about (the costly half of `query`; thread-safe, the model is never locked)."""
        serving = self._serving
        batch = self._prepare(images)
        with torch.inference_mode():
            feats = serving.encoder(batch.to(self._device)).float()
        return Embedding(feats, serving, self)

    def answer(self, embedding: GraspEmbedding, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """`query`'s answers from an `embed` result: one dict per observation, {name: {"graspable", "score"}}, plus
        "location" for a dense model ({"u", "v", "box": [x0, y0, x1, y1], "confidence"}, normalised to [0, 1] of
        the model's square input: where its local term looks for the name).
        Text features are cached per prompt, so this is a few small products; thresholds and descriptions are
        those of the weights that computed the embedding (`embedding.model_version`)."""
        if not isinstance(embedding, Embedding) or embedding.owner is not self:
            raise ValueError(f"answer() takes an embedding made by this model's embed(), got "
                             f"{type(embedding).__name__}")
        keys = _check_names(names)
        serving = self._serving
        if serving.version != embedding.model_version:  # weights swapped since: answer as the weights it came from
            serving = embedding.serving
        prompts = [self._prompt_key(key, serving) for key in keys]
        memo = embedding.answers  # shared by threads answering about the same features: read once, then added to
        found = {prompt: memo.get(prompt) for prompt in prompts}
        todo = [prompt for prompt, known in found.items() if known is None]
        if todo:  # each name is scored on its own (the scorer's softmax runs over locations, not names)
            pos, neg = self._name_features(todo, serving)
            with torch.inference_mode():
                logits, boxes = self._scorer.score_and_locate(embedding.features, pos, neg)
                learnt = [(j, serving.entries[p[0]]) for j, p in enumerate(todo) if p[2]]
                if learnt:  # an object learnt from shots has its own scale and bias on the raw logit
                    cols = [j for j, _ in learnt]
                    scale = torch.tensor([e.query_scale for _, e in learnt], dtype=logits.dtype)
                    bias = torch.tensor([e.query_bias for _, e in learnt], dtype=logits.dtype)
                    logits = logits.clone()
                    logits[:, cols] = logits[:, cols] * scale + bias
                scores = torch.sigmoid(logits).cpu().T.tolist()
                where = [None] * len(todo) if boxes is None else boxes.transpose(0, 1).tolist()
            new = dict(zip(todo, zip(scores, where)))
            found.update(new)
            if len(memo) + len(new) > NAME_CACHE_SIZE:  # bounded, whatever names clients make up
                memo.clear()
            memo.update(new)
        entries = serving.entries
        thresholds = [self._threshold if (e := entries.get(k)) is None or e.threshold is None else e.threshold
                      for k in keys]
        out = []
        for i in range(len(embedding)):
            answers = {}
            for name, prompt, t in zip(names, prompts, thresholds):
                scores_of, where_of = found[prompt]
                answers[name] = {"graspable": bool(scores_of[i] >= t), "score": float(scores_of[i])}
                if where_of is not None:
                    u, v, x0, y0, x1, y1, conf = where_of[i]
                    answers[name]["location"] = {"u": u, "v": v, "box": [x0, y0, x1, y1], "confidence": conf}
            out.append(answers)
        return out

    def threshold_for(self, name: str) -> float:
        """The decision threshold `query` applies to `name`: its own once learnt from shots, else the model's."""
        return self._threshold_of(normalize_name(name), self._serving.registry)

    def _threshold_of(self, key: str, registry: ObjectRegistry) -> float:
        entry = registry.get(key)
        return self._threshold if entry is None or entry.threshold is None else entry.threshold

    def add_object(self, name: str, images: Any, description: str | None = None, k: int = 5,
                   rois: Sequence[Box | None] | None = None) -> FewShotJob:
        """Learn `name` from its shots in the background; answers at once with the job, or raises ValueError saying
        why no job was started (a refused name, description, shot or region, fewer than `k` distinct shots, a full
        queue, another writer). `rois`: per image, where the object is (x_min, y_min, x_max, y_max in pixels of
        that image) or None (then the region the model locates the name best in; the job's report says which).

        Nothing changes until the job succeeds: a new name is listed by `objects()` meanwhile (answerable
        zero-shot, with its description) but persisted only on success; re-adding a known name changes its
        description (None or "": kept), shots, query vector and threshold only on success; the weights and every
        other object's answers never change. Near-duplicate shots are dropped; each distinct one is held out in
        turn to judge the query fitted on the others."""
        key = normalize_name(name)
        text = None if description is None else normalize_description(description) or None
        if isinstance(k, bool) or not isinstance(k, int) or k < MIN_SHOTS:
            raise ValueError(f"k must be an integer >= {MIN_SHOTS} (one shot is held out to judge the fit), "
                             f"got {k!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        inputs = self._prepare(items)
        if len(inputs) < k:
            raise ValueError(f"add_object({key!r}) needs at least k={k} shots, got {len(inputs)}")
        rgb = [base_rgb(item) for item in items]
        if any(r is None for r in rgb):
            raise ShotError(f"image {rgb.index(None)} has no base_rgb view to check; no few-shot job was started")
        boxes = self._input_boxes(rois, rgb)
        selection = check_shots(rgb, k, self.shot_rules, what="image")
        inputs, boxes = inputs[selection.kept], [boxes[i] for i in selection.kept]
        with self._jobs_lock:
            active = [j for j in self._jobs.values() if j.active]
            same = [j for j in active if j.name == key]
            if len(same) >= self.max_jobs_per_name:
                raise JobQueueFull(f"{len(same)} few-shot job(s) for {key!r} already queued or running "
                                   f"({', '.join(j.job_id for j in same)}; at most {self.max_jobs_per_name} per "
                                   "name): wait for it or cancel it")
            if len(active) >= self.max_jobs:
                raise JobQueueFull(f"{len(active)} few-shot jobs are queued or running, the most allowed "
                                   f"({self.max_jobs}): wait for one to finish or cancel one")
            self._take_writer_lock()
            registry = self._serving.registry
            job = FewShotJob(uuid.uuid4().hex[:12], key, text, shots=len(inputs))
            dropped = f", {len(selection.duplicates)} near-duplicate(s) dropped" if selection.duplicates else ""
            job.message = f"queued: {len(inputs)} distinct shots{dropped}"
            if registry.get(key) is None:
                self._pending = {**self._pending, key: ObjectEntry(key, description=text or "", source="added")}
            self._jobs[job.job_id] = job
            self._queue.put((job, inputs, boxes))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="vlkd-fewshot", daemon=True)
                self._worker.start()
        return job

    def remove_object(self, name: str) -> str:
        """Forget an object `add_object` taught: the registry drops it (revision + 1, the commit point), its objects/
        file is no longer served (and deleted from the dir few-shot learning writes), every other object's answers
        stay bit-identical; returns the new model_version. NotRemovable (nothing changed) for a name the registry
        does not hold, one the model was trained on, one whose shots were finetuned into the weights, or one a job
        is learning; the writer lock as for add_object."""
        key = normalize_name(name)
        with self._jobs_lock:
            registry = self._serving.registry
            entry = registry.get(key)
            learning = [j.job_id for j in self._jobs.values() if j.active and j.name == key]
            if learning:
                raise NotRemovable(f"cannot remove {key!r}: few-shot job {', '.join(learning)} is learning it; cancel "
                                   "it first")
            if entry is None:
                added = [o.name for o in registry.objects if o.source == "added"]
                raise NotRemovable(f"cannot remove {key!r}: the model knows no such object (objects added with "
                                   f"add_object: {', '.join(map(repr, added)) or 'none'})")
            if entry.source != "added":
                raise NotRemovable(f"cannot remove {key!r}: the model was trained on it (only objects taught with "
                                   "add_object can be removed; add_object again to change its query)")
            if entry.finetuned:
                raise NotRemovable(f"cannot remove {key!r}: its shots were finetuned into the weights "
                                   f"({registry.weights}); serve the model dir from before that finetune instead")
            self._take_writer_lock()
            with self._commit_lock:
                current = self._serving
                registry = replace(current.registry.revised(),
                                   objects=tuple(o for o in current.registry.objects if o.name != key))
                serving = self._snapshot(registry, current.student, current.encoder)
                if self._state_card is not None:
                    write_state_card(self._out, self._state_card)
                write_registry(self._out, registry)
                self._serving = serving
                self._prune(registry)
        log.info("removed %r; serving %s", key, registry.model_version)
        return registry.model_version

    def job(self, job_id: str) -> FewShotJob | None:
        """A few-shot job by id (None if unknown)."""
        return self._jobs.get(job_id)

    def jobs(self) -> list[FewShotJob]:
        """The few-shot jobs, oldest first: every queued or running one and the latest finished ones."""
        with self._jobs_lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> FewShotJob | None:
        """Cancel a queued or running job (None if unknown): it ends 'cancelled' having changed nothing. A running
        job stops at its next finetune step; one already committing, or finished, is returned unchanged."""
        with self._jobs_lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return job
            job.request_cancel()
            if job.state == "queued":  # the worker skips it when it comes to it
                job.state, job.message = "cancelled", "cancelled before it started; nothing changed"
                self._settle(job)
                job.finish()
        if job.state == "running":
            job.wait(CANCEL_WAIT_S)
        return job

    def close(self, timeout: float | None = None) -> None:
        """Stop the background worker after the queued jobs, then release the model dir's writer lock."""
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout)
        if self._worker is None or not self._worker.is_alive():
            self._writer.release()

    def _take_writer_lock(self) -> None:
        """Hold the model dir's writer lock from the first job on, and refuse if another writer committed to the
        dir since this instance loaded it (its registry would be overwritten)."""
        if self._writer.held:
            return
        self._writer.acquire()
        try:
            on_disk = served_registry(self._files)
        except Exception:
            self._writer.release()
            raise
        if on_disk != self._serving.registry:
            self._writer.release()
            raise FewShotError(f"{self._files.registry_dir() / REGISTRY_FILE} changed since this instance loaded "
                               f"it (now {on_disk.model_version}, serving {self.model_version}): another writer "
                               "committed to the dir; load it again (GraspFeasibility.from_checkpoint) to add objects")

    def _settle(self, job: FewShotJob) -> None:
        """After `job` ended: keep the job history bounded and forget a pending new name no job is learning now
        (the registry lists it once a job succeeded). Called with _jobs_lock held."""
        if job.name in self._pending and not any(j.active and j.name == job.name for j in self._jobs.values()):
            self._pending = {k: v for k, v in self._pending.items() if k != job.name}
        finished = [j for j in self._jobs.values() if not j.active]
        for old in finished[:max(0, len(finished) - JOB_HISTORY)]:
            del self._jobs[old.job_id]

    # -- inputs and text ------------------------------------------------------------------------------------

    def _input_boxes(self, rois: Sequence[Box | None] | None, rgb: list[np.ndarray]) -> list[Box | None]:
        """Each image's region of interest (pixels x0, y0, x1, y1) as a box normalised to the model's square input
        (the centre square of the image, `vlkd_ros.inference.locations`), clipped to it; None where none is given.
        ValueError for a list of another length, a box that is not 4 finite numbers with x0 < x1, y0 < y1, or one
        that lies outside the part of the image the model sees."""
        if rois is None:
            return [None] * len(rgb)
        if isinstance(rois, (str, bytes)) or len(rois) != len(rgb):
            raise ValueError(f"rois must give one region (or None) per image: {len(rgb)} image(s), got {rois!r}")
        out: list[Box | None] = []
        for i, (roi, image) in enumerate(zip(rois, rgb)):
            if roi is None:
                out.append(None)
                continue
            try:
                x0, y0, x1, y1 = (float(v) for v in roi)
            except (TypeError, ValueError):
                raise ValueError(f"roi {i} must be 4 numbers x_min, y_min, x_max, y_max in pixels, got {roi!r}") \
                    from None
            if not all(np.isfinite([x0, y0, x1, y1])) or not (x0 < x1 and y0 < y1):
                raise ValueError(f"roi {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box with x_min < x_max and "
                                 "y_min < y_max")
            h, w = image.shape[:2]
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            box = tuple(min(max((v - off) / side, 0.0), 1.0) for v, off in ((x0, left), (y0, top), (x1, left),
                                                                           (y1, top)))
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"roi {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the centre square of the "
                                 f"{w}x{h} image, the part the model sees")
            out.append(box)
        return out

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

    def _prompt_key(self, key: str, serving: _Serving) -> tuple[str, str, str]:
        """(name, the description it is prompted with under `serving`'s registry or a pending job ("" for none),
        the file of its query vector once learnt from shots ("" for none))."""
        entry = serving.entries.get(key)
        query = entry.query if entry is not None and entry.query and key in serving.queries else ""
        entry = entry or self._pending.get(key)
        return key, entry.description if entry is not None and entry.description else "", query

    def _name_features(self, prompts: list[tuple[str, str, str]], serving: _Serving
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_features` of the names of `prompts` (`_prompt_key`s) under `serving`'s registry, or the query vector
        of a name learnt from shots (its negative row zero), each name's rows cached with the description and
        query they came from (an answer costs a lookup per name, not prompt building and normalising)."""
        cache = self._name_cache
        rows = []
        for cache_key in prompts:
            key, _, query = cache_key
            row = cache.get(cache_key)
            if row is None and query:
                vector = serving.queries[key].to(self._device)
                row = (vector, torch.zeros_like(vector) if self._text_config.negative_templates else None)
            if row is None:
                pos, neg = self._features([key], serving.registry)
                row = (pos[0], None if neg is None else neg[0])
                if len(cache) >= NAME_CACHE_SIZE:
                    cache.clear()
                cache[cache_key] = row
            rows.append(row)
        pos = torch.stack([r[0] for r in rows])
        return pos, (None if rows[0][1] is None else torch.stack([r[1] for r in rows]))

    def _features(self, keys: list[str], registry: ObjectRegistry) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positive/negative prompt features (N, D) of normalised names, with registry descriptions."""
        pending = self._pending
        descriptions = {k: e.description for k in keys
                        if (e := registry.get(k) or pending.get(k)) is not None and e.description}
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

    def _snapshot(self, registry: ObjectRegistry, student: Student, encoder: Callable | None = None) -> _Serving:
        """The serving state of `registry`: its weights (backend "onnx" loads their export and never writes one;
        `encoder` reuses one already loaded for the same weights) and its objects' query vectors."""
        student = student.to(self._device).eval().requires_grad_(False)
        if encoder is None and self._backend == "onnx":
            encoder = OnnxEncoder(self._files.path(onnx_file(registry.weights_sha256)), self._device, self._root,
                                  registry.model_version, self._threads)
        queries = {o.name: load_file(str(self._files.path(o.query)))["query"].float()
                   for o in registry.objects if o.query}
        return _Serving(registry.model_version, registry, student, encoder or student, queries)

    # -- few-shot worker ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, inputs, boxes = item
            with self._jobs_lock:
                if job.state != "queued":  # cancelled while it waited
                    continue
                job.state = "running"
            try:
                self._learn(job, inputs, boxes)
                job.state, job.progress = "succeeded", 1.0
            except JobCancelled:
                job.state, job.message = "cancelled", "cancelled while it ran; nothing changed"
            except ValidationFailed as err:
                log.warning("few-shot job %s (%s): %s", job.job_id, job.name, err)
                job.state, job.message = "failed", str(err)
            except Exception as err:  # a failed job must never take the serving model down
                log.exception("few-shot job %s (%s) failed", job.job_id, job.name)
                job.state, job.message = "failed", f"{type(err).__name__}: {err}"
            finally:
                with self._jobs_lock:
                    self._settle(job)
                job.finish()

    def _learn(self, job: FewShotJob, inputs: torch.Tensor, boxes: list[Box | None]) -> None:
        """Judge, then fit, the object's query vector against held-out training frames without it: each shot is
        scored by a query fitted on the other shots, against the frames no fit saw (`QueryFitConfig.validation`
        of them); on success the query fitted on every shot is committed. The entry (with its new description)
        exists in memory only until `_commit` writes it."""
        serving, cfg = self._serving, self.fewshot
        cfg.validate()
        key = job.name
        entry = serving.registry.get(key) or self._pending.get(key) or ObjectEntry(key, source="added")
        if job.description is not None:
            entry = replace(entry, description=job.description)
        prior_pos, prior_neg = self._features([key], serving.registry.with_object(entry))
        prior = prior_pos[0] if prior_neg is None else prior_pos[0] - prior_neg[0]  # the zero-shot direction
        feats = self._embed_inputs(serving, inputs)
        job.check_cancel()
        job.progress = 0.2
        negatives = self._absent_features(serving, key)
        n_val = min(len(negatives) - 1, max(1, round(len(negatives) * cfg.validation)))
        neg_fit, neg_val = negatives[:-n_val], negatives[-n_val:]  # no fit sees the validation frames
        neg_rows = negative_rows(neg_fit.numpy())
        direction = prior.cpu().numpy()
        regions, where = shot_regions(feats.numpy(), boxes, direction)
        whole = feats[:, 0].numpy() if feats.ndim == 3 else feats.numpy()

        def fit(shots: list[int], prior_weight: float) -> torch.Tensor:
            if math.isinf(prior_weight):  # the text direction itself (then only its scale and bias are fitted)
                return prior.cpu().float()
            positives = np.concatenate([regions[shots], whole[shots]])
            return torch.from_numpy(fit_query(positives, neg_rows, direction, self._scorer.scale, prior_weight))

        n = len(inputs)
        val_of = {}  # prior weight -> mean over held-out shots of the share of validation frames it outscores
        for step, weight in enumerate(cfg.prior_weights):
            ranks = []
            for i in range(n):
                job.check_cancel()
                vector = fit([j for j in range(n) if j != i], weight)
                ranks.append(ranking_auc(self._raw_scores(feats[i:i + 1], vector), self._raw_scores(neg_val, vector)))
            val_of[weight] = float(np.mean(ranks))
            job.progress = 0.2 + 0.6 * (step + 1) / len(cfg.prior_weights)
        weight = max(cfg.prior_weights, key=lambda w: (val_of[w], w))  # ties: the one nearer the text prior
        job.report = {"shots": float(n), "validation_frames": float(len(neg_val)), "prior_weight": weight,
                      "heldout_auc": val_of[weight], "zero_shot_heldout_auc": val_of.get(math.inf, float("nan")),
                      "heldout_auc_by_prior_weight": {str(w): a for w, a in val_of.items()}, "regions": where}
        if not job.report["heldout_auc"] >= cfg.min_heldout_auc:
            raise ValidationFailed(
                f"validation failed, nothing changed: each of the {n} shots, scored by a query fitted on the others, "
                f"does not stand out from {len(neg_val)} held-out training frames without the object (ROC AUC "
                f"{job.report['heldout_auc']:.2f} < {cfg.min_heldout_auc:g}; zero-shot "
                f"{job.report['zero_shot_heldout_auc']:.2f}): do all shots show the same object, and is it in view "
                "(give a region of interest per shot)?")
        job.check_cancel()
        vector = fit(list(range(n)), weight)
        scale, bias = calibrate(self._raw_scores(feats, vector), self._raw_scores(neg_fit, vector))
        threshold = fpr_threshold(sigmoid(scale * self._raw_scores(negatives, vector) + bias), cfg.object_fpr)
        job.report.update(query_scale=scale, query_bias=bias, threshold=threshold)
        job.progress = 0.9
        entry = replace(entry, query_scale=scale, query_bias=bias, threshold=threshold)
        shot_inputs = torch.cat([self._load_shots(serving.registry.get(key)), inputs])[-MAX_KEPT_SHOTS:]
        job.check_cancel()
        self._commit(job, entry, shot_inputs, vector)

    def _embed_inputs(self, serving: _Serving, inputs: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """The serving encoder's features of transformed observations, on the CPU."""
        with torch.inference_mode():
            out = [serving.encoder(inputs[i:i + batch].to(self._device)).float().cpu()
                   for i in range(0, len(inputs), batch)]
        return torch.cat(out)

    def _absent_features(self, serving: _Serving, key: str) -> torch.Tensor:
        """Features of the model dir's held-out training frames without the object `key` (all of them for a name
        the model was not trained on: training scenes never hold it), embedded once per weights."""
        buffer = self._replay_buffer()
        weights = serving.registry.weights_sha256
        if self._negatives is None or self._negatives[0] != weights:
            self._negatives = (weights, self._embed_inputs(serving, buffer.val_inputs))
        feats = self._negatives[1]
        column = self._replay_columns().get(key)
        absent = feats if column is None else feats[buffer.val_targets[:, column] < 0.5]
        if len(absent) < 2:
            raise FewShotError(f"the model dir's replay buffer holds {len(absent)} held-out frame(s) without "
                               f"{key!r}: too few to fit and judge its query vector")
        return absent

    def _raw_scores(self, feats: torch.Tensor, vector: torch.Tensor) -> np.ndarray:
        """The scorer's logit of one query vector on features (N, ...): what an answer scales and biases."""
        zero = torch.zeros_like(vector)[None] if self._text_config.negative_templates else None
        with torch.inference_mode():
            return self._scorer(feats.to(self._device), vector[None].to(self._device), zero)[:, 0].cpu().numpy()

    def _commit(self, job: FewShotJob, entry: ObjectEntry, shot_inputs: torch.Tensor, vector: torch.Tensor) -> None:
        """Write the object's shots and query vector (one file), a state dir's card, then the registry (the commit
        point), then swap the serving snapshot (same weights and encoder)."""
        out = self._out
        with self._commit_lock:
            current = self._serving
            registry = current.registry.revised()
            rel = shots_file(job.name, registry.revision)
            atomic_write(out / rel, lambda tmp: save_file(
                {"inputs": shot_inputs.half().contiguous(), "query": vector.float().contiguous()}, tmp))
            registry = registry.with_object(replace(entry, shots=rel, n_shots=len(shot_inputs), query=rel))
            serving = self._snapshot(registry, current.student, current.encoder)
            if self._state_card is not None:
                write_state_card(out, self._state_card)
            write_registry(out, registry)
            self._serving = serving
            self._prune(registry)
        job.message = (f"{job.name!r} learnt from {len(shot_inputs)} shots as a query vector (held-out ROC AUC "
                       f"{job.report['heldout_auc']:.2f}, zero-shot {job.report['zero_shot_heldout_auc']:.2f}); "
                       f"serving {registry.model_version}")
        log.info("few-shot job %s: %s", job.job_id, job.message)

    def _prune(self, registry: ObjectRegistry) -> None:
        """Delete the weights, shots and ONNX files that few-shot learning wrote and the registry no longer
        references (only in the dir it writes to: a state dir's model dir is never changed)."""
        keep = {registry.weights, onnx_file(registry.weights_sha256)} | {o.shots for o in registry.objects if o.shots}
        for folder in (WEIGHTS_DIR, OBJECTS_DIR, ONNX_DIR):
            for path in (self._out / folder).glob("*"):
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
        return load_file(str(self._files.path(entry.shots)))["inputs"].float()


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"names must be a list of object names, got the string {names!r}; use [{names!r}]")
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"names must be a non-empty list of object names, got {names!r}")
    return [_normalized(n) if isinstance(n, str) else normalize_name(n) for n in names]


_normalized = lru_cache(maxsize=4096)(normalize_name)  # answers normalise the same few names over and over


def _join(texts: list[str]) -> str:
    return "\x1f".join(texts)
