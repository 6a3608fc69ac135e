"""The image encoders a grasp model serves with, numpy in and out: backend "onnx" runs the student as exported to
the model dir's `onnx/` with onnxruntime (no torch in the process); backend "torch" runs the trained weights with
PyTorch (imported only then)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from vlkd_formats.model_dir import ModelDirError
from vlkd_runtime.grasp_dir import ServedModelDir
from vlkd_runtime.onnx_session import image_features, onnx_session

BACKENDS = ("torch", "onnx")
ImageEncoder = Callable[[np.ndarray], np.ndarray]  # inputs (B, C, S, S) float32 -> features (B, D) or (B, 1 + L, D)


class OnnxImageEncoder:
    """An exported student run by a thread-safe onnxruntime session (`threads` > 0: its intra-op threads)."""

    def __init__(self, path: Path, cuda: bool, model_dir: Path, version: str, threads: int = 0):
        if not path.is_file():
            raise ModelDirError(f"{path} not found: backend 'onnx' runs the exported image encoder of the weights "
                                f"now current in {model_dir} ({version}), and nothing exported them; run `vlkd "
                                f"export --model {model_dir}` first, or use backend 'torch'")
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


def image_encoder(backend: str, model: ServedModelDir, device: str, threads: int) -> Any:
    """The image encoder of `model`'s current weights for `backend` ("onnx": their export, never written here)."""
    if backend == "onnx":
        return OnnxImageEncoder(model.onnx_path(), device.startswith("cuda"), model.root,
                                model.registry.model_version, threads)
    return TorchImageEncoder(model, device, threads)
