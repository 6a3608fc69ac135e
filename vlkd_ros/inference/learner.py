"""Learning new objects while serving: `add_object` checks the shots, queues a job, and a background worker fits
the object's query vector on the student's embeddings of its shots (`vlkd_runtime.query_fit`; the weights never
change, so every other object's answers stay bit-identical), judges it on held-out frames and commits it through
the state store; `remove_object` undoes what add_object taught. numpy only."""
from __future__ import annotations

import logging
import math
import queue
import threading
import uuid
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from vlkd_formats.object_registry import ObjectEntry, normalize_description, normalize_name
from vlkd_ros.inference.answerer import Answerer, Serving
from vlkd_ros.inference.heap import trim_heap
from vlkd_ros.inference.jobs import FewShotJob, JobCancelled
from vlkd_ros.inference.shots import MIN_SHOTS, ShotError, ShotRules, base_rgb, check_shots
from vlkd_ros.inference.state_store import FewShotError, StateStore
from vlkd_runtime.grasp_dir import HeldOut
from vlkd_runtime.held_out_features import held_out_features, read_held_out_features
from vlkd_runtime.query_fit import (Box, QueryFitConfig, calibrate, detector_negative_rows, detector_shot_regions,
                                    fit_query, fpr_threshold, negative_rows, ranking_auc, shot_regions)
from vlkd_runtime.scoring import DetectorScorer, sigmoid

log = logging.getLogger(__name__)
MAX_JOBS, MAX_JOBS_PER_NAME, JOB_HISTORY = 4, 1, 100
MAX_KEPT_SHOTS = 50  # an object's newest shots kept with its query (for an offline finetune or a refit)
CANCEL_WAIT_S = 10.0  # how long cancel() waits for a running job to reach its next step


class JobQueueFull(FewShotError):
    """add_object refused: as many few-shot jobs as allowed are queued or running (in total or for that name)."""


class NotRemovable(FewShotError):
    """remove_object refused: the name is not an object add_object taught (unknown, or one the model was trained on),
    or a job is learning it now."""


class ValidationFailed(RuntimeError):
    """A fitted query failed its validation on held-out shots: the job fails and nothing changes."""


class Learner:
    """Few-shot jobs on one model: `fewshot` (`QueryFitConfig`), `shot_rules` and `max_jobs` / `max_jobs_per_name`
    are read by later calls; `held_out` gives the model dir's held-out frames (read when a job first needs them)."""

    def __init__(self, answerer: Answerer, store: StateStore, held_out: Callable[[], HeldOut]):
        self._answerer, self._store, self._read_held_out = answerer, store, held_out
        self.fewshot = QueryFitConfig()
        self.shot_rules = ShotRules()
        self.max_jobs, self.max_jobs_per_name = MAX_JOBS, MAX_JOBS_PER_NAME
        self.pending: dict[str, ObjectEntry] = {}  # new names with a job in flight: listed, never persisted
        self._negatives: tuple[list[str], np.ndarray, np.ndarray] | None = None  # held-out names, targets, features
        self._jobs: dict[str, FewShotJob] = {}
        self._jobs_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    def add_object(self, name: str, images: Any, description: str | None, k: int,
                   rois: Sequence[Box | None] | None) -> FewShotJob:
        """`GraspFeasibility.add_object`: every refusal before a job, then the job, queued."""
        key = normalize_name(name)
        text = None if description is None else normalize_description(description) or None
        if isinstance(k, bool) or not isinstance(k, int) or k < MIN_SHOTS:
            raise ValueError(f"k must be an integer >= {MIN_SHOTS} (one shot is held out to judge the fit), "
                             f"got {k!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        inputs = self._answerer.prepare(items)
        if len(inputs) < k:
            raise ValueError(f"add_object({key!r}) needs at least k={k} shots, got {len(inputs)}")
        rgb = [base_rgb(item) for item in items]
        if any(r is None for r in rgb):
            raise ShotError(f"image {rgb.index(None)} has no base_rgb view to check; no few-shot job was started")
        boxes = input_boxes(rois, rgb)
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
            self._store.take_writer_lock()
            job = FewShotJob(uuid.uuid4().hex[:12], key, text, shots=len(inputs))
            dropped = f", {len(selection.duplicates)} near-duplicate(s) dropped" if selection.duplicates else ""
            job.message = f"queued: {len(inputs)} distinct shots{dropped}"
            if self._store.serving.registry.get(key) is None:
                self.pending = {**self.pending, key: ObjectEntry(key, description=text or "", source="added")}
            self._jobs[job.job_id] = job
            self._queue.put((job, inputs, boxes))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="vlkd-fewshot", daemon=True)
                self._worker.start()
        return job

    def remove_object(self, name: str) -> str:
        """`GraspFeasibility.remove_object`: refused (NotRemovable) before any write, else committed."""
        key = normalize_name(name)
        with self._jobs_lock:
            registry = self._store.serving.registry
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
            self._store.take_writer_lock()
            registry = self._store.remove_object(key)
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
        job stops at its next step; one already committing, or finished, is returned unchanged."""
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
            self._store.release()

    def _settle(self, job: FewShotJob) -> None:
        """After `job` ended: keep the job history bounded and forget a pending new name no job is learning now
        (the registry lists it once a job succeeded). Called with _jobs_lock held."""
        if job.name in self.pending and not any(j.active and j.name == job.name for j in self._jobs.values()):
            self.pending = {k: v for k, v in self.pending.items() if k != job.name}
        finished = [j for j in self._jobs.values() if not j.active]
        for old in finished[:max(0, len(finished) - JOB_HISTORY)]:
            del self._jobs[old.job_id]

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
                trim_heap()  # the job's temporaries: 8-27 MB a job that glibc would otherwise keep

    def _learn(self, job: FewShotJob, inputs: np.ndarray, boxes: list[Box | None]) -> None:
        """Judge, then fit, the object's query vector against held-out training frames without it: each shot is
        scored by a query fitted on the other shots, against the frames no fit saw (`QueryFitConfig.validation`
        of them); on success the query fitted on every shot is committed. The entry (with its new description)
        exists in memory only until the commit writes it."""
        answerer, serving, cfg = self._answerer, self._store.serving, self.fewshot
        cfg.validate()
        key = job.name
        entry = serving.registry.get(key) or self.pending.get(key) or ObjectEntry(key, source="added")
        if job.description is not None:
            entry = replace(entry, description=job.description)
        prior_pos, prior_neg = answerer.text_features([key], serving.registry.with_object(entry))
        prior = prior_pos[0] if prior_neg is None else prior_pos[0] - prior_neg[0]  # the zero-shot direction
        feats = answerer.features(serving, inputs)
        job.check_cancel()
        job.progress = 0.2
        negatives = self._absent_features(serving, key)
        n_val = min(len(negatives) - 1, max(1, round(len(negatives) * cfg.validation)))
        neg_fit, neg_val = negatives[:-n_val], negatives[-n_val:]  # no fit sees the validation frames
        if isinstance(answerer.scorer, DetectorScorer):  # the object where the detector finds it; no global embedding
            neg_rows = detector_negative_rows(neg_fit, len(prior))
            peak = answerer.scorer.log_scores(feats, prior[None], None)[..., 0]
            regions, where = detector_shot_regions(feats, boxes, peak, len(prior))
            whole = None
        else:
            neg_rows = negative_rows(neg_fit)
            regions, where = shot_regions(feats, boxes, prior)
            whole = feats[:, 0] if feats.ndim == 3 else feats
        scale = float(answerer.scorer.scale)

        def fit(shots: list[int], prior_weight: float) -> np.ndarray:
            if math.isinf(prior_weight):  # the text direction itself (then only its scale and bias are fitted)
                return prior.astype(np.float32)
            positives = regions[shots] if whole is None else np.concatenate([regions[shots], whole[shots]])
            return fit_query(positives, neg_rows, prior, scale, prior_weight)

        n = len(inputs)
        val_of = {}  # prior weight -> mean over held-out shots of the share of validation frames it outscores
        for step, weight in enumerate(cfg.prior_weights):
            ranks = []
            for i in range(n):
                job.check_cancel()
                vector = fit([j for j in range(n) if j != i], weight)
                ranks.append(ranking_auc(answerer.raw_scores(feats[i:i + 1], vector),
                                         answerer.raw_scores(neg_val, vector)))
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
        q_scale, q_bias = calibrate(answerer.raw_scores(feats, vector), answerer.raw_scores(neg_fit, vector))
        threshold = fpr_threshold(sigmoid(q_scale * answerer.raw_scores(negatives, vector) + q_bias), cfg.object_fpr)
        job.report.update(query_scale=q_scale, query_bias=q_bias, threshold=threshold)
        job.progress = 0.9
        entry = replace(entry, query_scale=q_scale, query_bias=q_bias, threshold=threshold)
        kept = self._store.load_shots(serving.registry.get(key), inputs.shape[1:])
        shot_inputs = np.concatenate([kept, inputs])[-MAX_KEPT_SHOTS:]
        job.check_cancel()
        registry = self._store.commit_object(entry, shot_inputs, vector)
        job.message = (f"{job.name!r} learnt from {len(shot_inputs)} shots as a query vector (held-out ROC AUC "
                       f"{job.report['heldout_auc']:.2f}, zero-shot {job.report['zero_shot_heldout_auc']:.2f}); "
                       f"serving {registry.model_version}")
        log.info("few-shot job %s: %s", job.job_id, job.message)

    def _absent_features(self, serving: Serving, key: str) -> np.ndarray:
        """Features of the model dir's held-out training frames without the object `key` (all of them for a name
        the model was not trained on: training scenes never hold it), embedded once (the weights never change while
        serving; the frames themselves are not kept)."""
        if self._negatives is None:
            held = self._read_held_out()
            self._negatives = (held.names, held.targets, self._held_out_features(serving, held))
        names, targets, feats = self._negatives
        column = {normalize_name(n): i for i, n in enumerate(names)}.get(key)
        absent = feats if column is None else feats[targets[:, column] < 0.5]
        if len(absent) < 2:
            raise FewShotError(f"the model dir's held-out frames hold {len(absent)} frame(s) without {key!r}: too "
                               "few to fit and judge its query vector")
        return absent

    def _held_out_features(self, serving: Serving, held: HeldOut) -> np.ndarray:
        """The serving encoder's features of every held-out frame: as stored with the weights' ONNX export, else
        embedded here (a detector's cut to their most object-like locations, `vlkd_runtime.held_out_features`)."""
        stored = None if held.features_path is None else read_held_out_features(held.features_path, held)
        if stored is not None:
            return stored
        return held_out_features(serving.encoder, held, isinstance(self._answerer.scorer, DetectorScorer))


def input_boxes(rois: Sequence[Box | None] | None, rgb: list[np.ndarray]) -> list[Box | None]:
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
