"""Backend "onnx": the student's image encoder as exported to the model dir's `onnx/` (by `vlkd export` or a
few-shot commit), run with onnxruntime. Loading never exports."""
from __future__ import annotations

from pathlib import Path

import torch

from vlkd_formats.model_dir import ModelDirError


class OnnxEncoder:
    """images (B, C, S, S) -> features (B, D) through an exported student (thread-safe onnxruntime session;
    `threads` > 0 sets its intra-op threads, 0 leaves onnxruntime's default of one per core)."""

    def __init__(self, path: Path, device: torch.device, model_dir: Path, version: str, threads: int = 0):
        if not path.is_file():
            raise ModelDirError(f"{path} not found: backend 'onnx' runs the exported image encoder of the weights "
                                f"now current in {model_dir} ({version}), and nothing exported them; run `vlkd "
                                f"export --model {model_dir}` first, or use backend 'torch'")
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
        available = ort.get_available_providers()
        if providers and providers[0] not in available:
            raise ValueError(f"backend 'onnx' on {device} needs onnxruntime's CUDAExecutionProvider; have {available}")
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1  # one graph, run sequentially: the parallelism is within its ops
        if threads > 0:
            options.intra_op_num_threads = threads
        # Spinning worker threads keep a core busy between runs; on a small robot computer that core is the
        # camera's and the executor's.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=providers + ["CPUExecutionProvider"])
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["features"], {"images": images.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).to(self.device)
