"""onnxruntime sessions as serving runs them: one graph run sequentially, intra-op threads settable, no spinning
worker threads (on a small robot computer the spare core is the camera's and the executor's)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def onnx_session(path: str | Path, threads: int = 0, cuda: bool = False) -> Any:
    """An onnxruntime InferenceSession of `path` (`threads` > 0: its intra-op threads, 0: one per core; `cuda`: the
    CUDA provider first, ValueError when onnxruntime has none)."""
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider"] if cuda else []
    available = ort.get_available_providers()
    if providers and providers[0] not in available:
        raise ValueError(f"onnxruntime on a CUDA device needs its CUDAExecutionProvider; have {available}")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if threads > 0:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=providers + ["CPUExecutionProvider"])


def image_features(session: Any, images: np.ndarray) -> np.ndarray:
    """An exported image encoder's features of transformed observations (B, C, S, S) (`session`: `onnx_session`)."""
    return session.run(["features"], {"images": np.ascontiguousarray(images, np.float32)})[0]
