"""The image encoders a grasp model serves with, numpy in and out: backend "onnx" runs the student as exported to
the model dir's `onnx/` with onnxruntime (no torch in the process), "onnx-int8" its int8 copy (3x faster on CPUs
with int8 dot products; the shipped model's held-out ROC AUC within 0.001 of float32), "auto" the int8 copy where
the export wrote one, else the float32 one; backend "torch" runs the trained weights with PyTorch (imported only
then)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from vlkd_formats.model_dir import ModelDirError
from vlkd_runtime.grasp_dir import ServedModelDir
from vlkd_runtime.onnx_session import image_features, onnx_session

BACKENDS = ("torch", "onnx", "onnx-int8", "auto")
ImageEncoder = Callable[[np.ndarray], np.ndarray]  # inputs (B, C, S, S) float32 -> features (B, D) or (B, 1 + L, D)


class OnnxImageEncoder:
    """An exported student run by a thread-safe onnxruntime session (`threads` > 0: its intra-op threads)."""

    def __init__(self, path: Path, cuda: bool, model_dir: Path, version: str, threads: int = 0,
                 backend: str = "onnx"):
        if not path.is_file():
            other = ("(it says why it writes no int8 copy), or use backend 'onnx' or 'torch'" if backend == "onnx-int8"
                     else "or use backend 'torch'")
            raise ModelDirError(f"{path} not found: backend '{backend}' runs the exported image encoder of the "
                                f"weights now current in {model_dir} ({version}), and nothing exported them; run "
                                f"`vlkd export --model {model_dir}` first {other}")
        self.session = onnx_session(path, threads, cuda)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return image_features(self.session, images)


class TorchImageEncoder:
    """The served weights run by PyTorch (`vlkd_ros` loads them through `training.grasp.model_dir`)."""

    def __init__(self, model: ServedModelDir, device: str, threads: int = 0):
        import torch

        from training.grasp.model_dir import load_grasp_model_dir

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
        if threads:
            torch.set_num_threads(threads)
        self._torch, self.device = torch, dev
        self.student = load_grasp_model_dir(model.root, dev, model.files.state).student.requires_grad_(False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.student(self._torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device))
            return out.float().cpu().numpy()


def resolve_backend(backend: str, model: ServedModelDir) -> str:
    """`backend` as it serves `model`: "auto" is "onnx-int8" where the export wrote the int8 copy, else "onnx"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "onnx-int8" if model.onnx_path(int8=True).is_file() else "onnx"
    return backend


def image_encoder(backend: str, model: ServedModelDir, device: str, threads: int) -> Any:
    """The image encoder of `model`'s current weights for a resolved `backend` ("onnx", "onnx-int8": their export,
    never written here)."""
    if backend in ("onnx", "onnx-int8"):
        return OnnxImageEncoder(model.onnx_path(int8=backend == "onnx-int8"), device.startswith("cuda"), model.root,
                                model.registry.model_version, threads, backend)
    return TorchImageEncoder(model, device, threads)
