"""Backend "onnx": the student's image encoder as exported to the model dir's `onnx/` (by `vlkd export` or a
few-shot commit), run with onnxruntime. Loading never exports."""
from __future__ import annotations

from pathlib import Path

import torch

from vlkd_formats.model_dir import ModelDirError


class OnnxEncoder:
    """images (B, C, S, S) -> features (B, D) through an exported student (thread-safe onnxruntime session)."""

    def __init__(self, path: Path, device: torch.device, model_dir: Path, version: str):
        if not path.is_file():
            raise ModelDirError(f"{path} not found: backend 'onnx' runs the exported image encoder of the weights "
                                f"now current in {model_dir} ({version}), and nothing exported them; run `vlkd "
                                f"export --model {model_dir}` first, or use backend 'torch'")
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
        available = ort.get_available_providers()
        if providers and providers[0] not in available:
            raise ValueError(f"backend 'onnx' on {device} needs onnxruntime's CUDAExecutionProvider; have {available}")
        self.session = ort.InferenceSession(str(path), providers=providers + ["CPUExecutionProvider"])
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["features"], {"images": images.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).to(self.device)
