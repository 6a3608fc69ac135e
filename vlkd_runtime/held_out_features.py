"""The serving encoder's features of a model dir's held-out frames, which few-shot jobs judge a new object's query
vector against: computed with the ONNX export of each weights (`vlkd train-grasp`, `vlkd export --model DIR`, the
install for the shipped model) and stored beside it (`vlkd_formats.model_dir.held_out_features_file`), so that a
node's first job does not embed them (the shipped model's 256 frames: ~3 s on 2 cores)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from vlkd_formats.atomic_io import atomic_write
from vlkd_formats.hashing import file_sha256
from vlkd_runtime.grasp_dir import HeldOut
from vlkd_runtime.query_fit import most_object_like

log = logging.getLogger(__name__)
# A detector's held-out frames keep their most object-like locations (a square number: the scorer takes them as a
# map); the fit's negatives are among them, and a learnt query's answer peaks among the shipped model's 64 on 99.8%
# of (query, frame) pairs.
HELD_OUT_LOCATIONS = 64
FEATURES_KEY, REPLAY_SHA_KEY = "features", "replay_sha256"


def held_out_features(encode: Callable[[np.ndarray], np.ndarray], held: HeldOut, detector: bool,
                      batch: int = 2) -> np.ndarray:
    """`encode`'s features (as float32) of every held-out frame, `batch` frames at a time (onnxruntime keeps the
    memory its largest batch took: 8 frames at a time cost a node 18 MB more than 2, and saved no time), written into
    one array (a list of batches joined at the end holds them twice at its peak); a detector's cut to their
    `HELD_OUT_LOCATIONS` most object-like locations (the shipped model's 256 locations: 70 MB, 64: 17 MB)."""
    n = len(held.targets)
    feats = np.empty((0,), np.float32)
    for start, inputs in zip(range(0, n, batch), held.batches(batch)):
        out = encode(inputs)
        if detector:
            out = most_object_like(out, HELD_OUT_LOCATIONS)
        if start == 0:
            feats = np.empty((n, *out.shape[1:]), np.float32)
        feats[start:start + len(out)] = out
    return feats


def write_held_out_features(path: str | Path, features: np.ndarray, held: HeldOut) -> Path:
    """Store `features` of `held`'s frames at `path` (atomically), with the SHA-256 of the file they were read from."""
    meta = {REPLAY_SHA_KEY: file_sha256(held.path)}
    return atomic_write(path, lambda tmp: save_file({FEATURES_KEY: np.ascontiguousarray(features, np.float32)}, tmp,
                                                    metadata=meta))


def read_held_out_features(path: str | Path, held: HeldOut) -> np.ndarray | None:
    """The stored features of `held`'s frames, or None (logged) when `path` is missing, unreadable, or made from
    another replay file or for another number of frames: the caller then embeds the frames itself."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "np") as f:
            made_from = (f.metadata() or {}).get(REPLAY_SHA_KEY)
            features = f.get_tensor(FEATURES_KEY)
    except Exception as err:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
        log.warning("ignoring %s: cannot read it (%s)", path, err)
        return None
    if made_from != file_sha256(held.path):
        log.warning("ignoring %s: made from another %s", path, held.path.name)
        return None
    if features.dtype != np.float32 or len(features) != len(held.targets):
        log.warning("ignoring %s: %s %s features for %d held-out frames", path, features.dtype, features.shape,
                    len(held.targets))
        return None
    return features
