"""Grasp-feasibility inference API: `GraspFeasibility.from_checkpoint(dir).query(images, names)`, and few-shot
learning of new objects in the background (`add_object`: a new object is a new query vector fitted on the student's
embeddings of its shots; the weights never change, so every other object's answers stay bit-identical), undone by
`remove_object`.

One concern per module: `answerer` (observations -> features -> answers), `learner` (few-shot jobs), `state_store`
(the serving snapshot and every write, under the model dir's writer lock), `encoders` (the image encoder of each
backend). With backend "onnx" a serving process imports neither torch nor `training`: preprocessing, the answer
arithmetic, the model-dir reader and text encoding of new names (the ONNX text tower) are `vlkd_runtime`'s.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from vlkd_formats.model_dir import resolve_model_dir
from vlkd_formats.object_registry import normalize_name
from vlkd_ros.inference.answerer import Answerer, Embedding, check_names
from vlkd_ros.inference.encoders import BACKENDS, image_encoder, resolve_backend
from vlkd_ros.inference.jobs import FewShotJob
from vlkd_ros.inference.learner import JobQueueFull, Learner, NotRemovable, ValidationFailed
from vlkd_ros.inference.model_paths import default_model_dir, state_dir_for
from vlkd_ros.inference.protocol import GraspEmbedding
from vlkd_ros.inference.shots import ShotError, ShotRules
from vlkd_ros.inference.state_store import FewShotError, StateStore
from vlkd_runtime.grasp_dir import ServedModelDir, read_served_model_dir
from vlkd_runtime.query_fit import Box, QueryFitConfig
from vlkd_runtime.text import OnnxTextEncoder

__all__ = ["BACKENDS", "Embedding", "FewShotError", "FewShotJob", "GraspFeasibility", "JobQueueFull", "NotRemovable",
           "ShotError", "ValidationFailed"]


class GraspFeasibility:
    """Is each named object graspable in an observation? Open vocabulary, batched, CPU or GPU.

    `fewshot` holds the settings `add_object` fits and judges a query vector with (`QueryFitConfig`), `shot_rules`
    what its shots must be (`vlkd_ros.inference.shots`), `max_jobs` / `max_jobs_per_name` how many jobs may be queued
    or running at once; set them to change later jobs. Nothing is written unless a job succeeds (or an object is
    removed), and then only to `state_dir` (or the model dir, when that is None); the first write takes that dir's
    writer lock (`vlkd_formats.dir_lock`) until `close()`."""

    def __init__(self, model: ServedModelDir, device: str, backend: str, threads: int = 0):
        self._model = model
        self.backend = resolve_backend(backend, model)  # "auto" resolved: the encoder that serves
        self._store = StateStore(model, image_encoder(self.backend, model, device, threads))
        def text() -> OnnxTextEncoder:
            return OnnxTextEncoder(model.text_encoder_dir(), threads, device.startswith("cuda"))

        self._answerer = Answerer(model, text, lambda: self._learner.pending)
        stored = None if self.backend == "torch" else model.held_out_features_path(int8=self.backend == "onnx-int8")
        self._learner = Learner(self._answerer, self._store, lambda: model.held_out(stored))

    @classmethod
    def from_checkpoint(cls, model_dir: str | os.PathLike | None = None, device: str = "cpu", backend: str = "torch",
                        threads: int = 0, state_dir: str | os.PathLike | None = None) -> "GraspFeasibility":
        """Load a grasp model dir (as `vlkd train-grasp` wrote it, with any objects added since), or the run dir
        holding it as `model/`; None: the shipped default model (`default_model_dir`). `state_dir`: where few-shot
        learning writes, and whose registry is served once it holds one (a StateDirError when it belongs to another
        model); None: the per-user default state dir for the default model or a model dir that is not writable
        (`state_dir_for`), else the model dir itself. Backend "onnx" runs the image encoder exported for the current
        weights (a ModelDirError says so when there is none) and imports no torch, "onnx-int8" its int8 copy, "auto"
        that copy where the export wrote one, else the float32 one (`encoders`); loading never writes. `threads`
        > 0: intra-op threads of the encoders (onnxruntime session threads; for backend torch also torch's
        process-wide thread count); 0 keeps the backend's default."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        root = resolve_model_dir(model_dir or default_model_dir())
        return cls(read_served_model_dir(root, state_dir_for(root, state_dir)), device, backend, threads)

    @property
    def model_dir(self) -> Path:
        """The model dir this instance serves."""
        return self._model.root

    @property
    def state_dir(self) -> Path | None:
        """The state dir add_object writes to (None: it writes into the model dir)."""
        return self._model.files.state

    @property
    def model_version(self) -> str:
        """'v<n>-<sha8>[.r<revision>]' of what is serving; changes whenever an object is learnt or removed."""
        return self._store.serving.version

    @property
    def needs_depth(self) -> bool:
        """True when the model stacks depth views (pass dict observations)."""
        return self._answerer.transform.needs_depth

    @property
    def image_size(self) -> int:
        """Side of the square model input; any HxW is resized to it."""
        return self._answerer.transform.image_size

    @property
    def views(self) -> list[str]:
        """Views the model stacks, in order (keys of a dict observation)."""
        return list(self._answerer.transform.views)

    @property
    def threshold(self) -> float:
        """Calibrated decision threshold on the score."""
        return self._answerer.threshold

    @property
    def encoder(self) -> Any:
        """The image encoder now serving (`vlkd_ros.inference.encoders`)."""
        return self._store.serving.encoder

    @property
    def fewshot(self) -> QueryFitConfig:
        """How later add_object jobs fit and judge a query vector."""
        return self._learner.fewshot

    @fewshot.setter
    def fewshot(self, value: QueryFitConfig) -> None:
        self._learner.fewshot = value

    @property
    def shot_rules(self) -> ShotRules:
        """What later add_object calls require of their shots."""
        return self._learner.shot_rules

    @shot_rules.setter
    def shot_rules(self, value: ShotRules) -> None:
        self._learner.shot_rules = value

    @property
    def max_jobs(self) -> int:
        """How many few-shot jobs may be queued or running at once."""
        return self._learner.max_jobs

    @max_jobs.setter
    def max_jobs(self, value: int) -> None:
        self._learner.max_jobs = value

    @property
    def max_jobs_per_name(self) -> int:
        """How many few-shot jobs for one name may be queued or running at once."""
        return self._learner.max_jobs_per_name

    @max_jobs_per_name.setter
    def max_jobs_per_name(self, value: int) -> None:
        self._learner.max_jobs_per_name = value

    def objects(self) -> list[tuple[str, str]]:
        """(name, description) of every object in the registry, then of new names a job is learning (answered
        zero-shot with their description meanwhile; gone again if the job does not succeed)."""
        registry, pending = self._store.serving.registry, self._learner.pending
        return [(o.name, o.description) for o in registry.objects] + [
            (key, e.description) for key, e in pending.items() if registry.get(key) is None]

    def query(self, images: Any, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation: {name: {"graspable": bool, "score": float}} for every name
        (`answer(embed(images), names)`)."""
        check_names(names)
        return self.answer(self.embed(images), names)

    def embed(self, images: Any) -> Embedding:
        """Run the student once on one observation or a list of them: their image features, to `answer` any
        number of names about (the costly half of `query`; thread-safe, the model is never locked)."""
        serving = self._store.serving
        return Embedding(self._answerer.features(serving, self._answerer.prepare(images)), serving, self)

    def answer(self, embedding: GraspEmbedding, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """`query`'s answers from an `embed` result: one dict per observation, {name: {"graspable", "score"}}, plus
        "location" for a dense model ({"u", "v", "box": [x0, y0, x1, y1], "confidence"}, normalised to [0, 1] of
        the model's square input: where its local term looks for the name). Text features are cached per prompt,
        so this is a few small products; thresholds and descriptions are those of the snapshot that computed the
        embedding (`embedding.model_version`)."""
        if not isinstance(embedding, Embedding) or embedding.owner is not self:
            raise ValueError(f"answer() takes an embedding made by this model's embed(), got "
                             f"{type(embedding).__name__}")
        return self._answerer.answer(embedding, names)

    def threshold_for(self, name: str) -> float:
        """The decision threshold `query` applies to `name`: its own once learnt from shots, else the model's."""
        return self._answerer.threshold_of(normalize_name(name), self._store.serving.registry)

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
        return self._learner.add_object(name, images, description, k, rois)

    def remove_object(self, name: str) -> str:
        """Forget an object `add_object` taught: the registry drops it (revision + 1, the commit point), its objects/
        file is no longer served (and deleted from the dir few-shot learning writes), every other object's answers
        stay bit-identical; returns the new model_version. NotRemovable (nothing changed) for a name the registry
        does not hold, one the model was trained on, one whose shots were finetuned into the weights, or one a job
        is learning; the writer lock as for add_object."""
        return self._learner.remove_object(name)

    def job(self, job_id: str) -> FewShotJob | None:
        """A few-shot job by id (None if unknown)."""
        return self._learner.job(job_id)

    def jobs(self) -> list[FewShotJob]:
        """The few-shot jobs, oldest first: every queued or running one and the latest finished ones."""
        return self._learner.jobs()

    def cancel(self, job_id: str) -> FewShotJob | None:
        """Cancel a queued or running job (None if unknown): it ends 'cancelled' having changed nothing. A running
        job stops at its next step; one already committing, or finished, is returned unchanged."""
        return self._learner.cancel(job_id)

    def close(self, timeout: float | None = None) -> None:
        """Stop the background worker after the queued jobs, then release the model dir's writer lock."""
        self._learner.close(timeout)
