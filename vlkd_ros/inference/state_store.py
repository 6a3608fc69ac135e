"""What a grasp model serves and what few-shot learning persists: the current `Serving` snapshot (replaced by one
reference assignment), and every write (objects/, registry.json, a state dir's card) into one dir, the state dir
overlaying the model dir or the model dir itself, under its writer lock (`vlkd_formats.dir_lock`); the registry is
the commit point."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable

import numpy as np
from safetensors.numpy import save_file

from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.dir_lock import DirLock
from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import OBJECTS_DIR, ONNX_DIR, REGISTRY_FILE, WEIGHTS_DIR, onnx_file, shots_file
from vlkd_formats.object_registry import ObjectEntry, ObjectRegistry, write_registry
from vlkd_formats.state_dir import write_state_card
from vlkd_ros.inference.answerer import Serving
from vlkd_runtime.grasp_dir import ServedModelDir, base_state_card, read_tensor, served_registry


class FewShotError(VlkdError, ValueError):
    """add_object cannot start a job on this model dir (its guard cannot run, another writer changed it)."""


class StateStore:
    """The serving snapshot of a model dir and the one writer of its few-shot state. The writer lock is taken by the
    first write (`take_writer_lock`) and held until `release`."""

    def __init__(self, model: ServedModelDir, encoder: Any):
        self.model, self.files = model, model.files
        self.out = model.files.writable
        self._state_card = None if model.files.state is None else base_state_card(model.root)
        self._writer = DirLock(self.out, "few-shot learner")
        self.lock = threading.RLock()  # held while committing: one commit at a time
        self.serving = self.snapshot(model.registry, encoder)

    def snapshot(self, registry: ObjectRegistry, encoder: Callable[[np.ndarray], np.ndarray]) -> Serving:
        """The serving state of `registry` with the image encoder of its weights, and its objects' query vectors."""
        queries = {o.name: read_tensor(self.files.path(o.query), "query") for o in registry.objects if o.query}
        return Serving(registry.model_version, registry, encoder, queries)

    def take_writer_lock(self) -> None:
        """Hold the model dir's writer lock from the first write on, and refuse if another writer committed to the
        dir since this instance loaded it (its registry would be overwritten)."""
        if self._writer.held:
            return
        self._writer.acquire()
        try:
            on_disk = served_registry(self.files)
        except Exception:
            self._writer.release()
            raise
        if on_disk != self.serving.registry:
            self._writer.release()
            raise FewShotError(f"{self.files.registry_dir() / REGISTRY_FILE} changed since this instance loaded "
                               f"it (now {on_disk.model_version}, serving {self.serving.version}): another writer "
                               "committed to the dir; load it again (GraspFeasibility.from_checkpoint) to add objects")

    def release(self) -> None:
        """Release the writer lock (if held)."""
        self._writer.release()

    def commit_object(self, entry: ObjectEntry, shot_inputs: np.ndarray, vector: np.ndarray) -> ObjectRegistry:
        """Write the object's shots and query vector (one file), then the registry (a revision more), then swap the
        serving snapshot (same weights and encoder)."""
        with self.lock:
            registry = self.serving.registry.revised()
            rel = shots_file(entry.name, registry.revision)
            atomic_write(self.out / rel, lambda tmp: save_file(
                {"inputs": shot_inputs.astype(np.float16), "query": vector.astype(np.float32)}, tmp))
            return self._commit(registry.with_object(replace(entry, shots=rel, n_shots=len(shot_inputs), query=rel)))

    def remove_object(self, key: str) -> ObjectRegistry:
        """Commit the registry without the object `key` (a revision more) and delete its files."""
        with self.lock:
            registry = self.serving.registry
            return self._commit(replace(registry.revised(), objects=tuple(o for o in registry.objects
                                                                          if o.name != key)))

    def load_shots(self, entry: ObjectEntry | None, shape: tuple[int, ...]) -> np.ndarray:
        """The shots kept with an object's query (float32 (N, *shape); none for None or an entry without)."""
        if entry is None or not entry.shots:
            return np.zeros((0, *shape), np.float32)
        return read_tensor(self.files.path(entry.shots), "inputs")

    def _commit(self, registry: ObjectRegistry) -> ObjectRegistry:
        serving = self.snapshot(registry, self.serving.encoder)
        if self._state_card is not None:
            write_state_card(self.out, self._state_card)
        write_registry(self.out, registry)
        self.serving = serving
        self._prune(registry)
        return registry

    def _prune(self, registry: ObjectRegistry) -> None:
        """Delete the weights, shots and ONNX files that few-shot learning wrote and the registry no longer
        references (only in the dir it writes to: a state dir's model dir is never changed)."""
        keep = {registry.weights, onnx_file(registry.weights_sha256)} | {o.shots for o in registry.objects if o.shots}
        for folder in (WEIGHTS_DIR, OBJECTS_DIR, ONNX_DIR):
            for path in (self.out / folder).glob("*"):
                rel = f"{folder}/{path.name}"
                if path.is_file() and rel not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)
