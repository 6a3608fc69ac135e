"""`vlkd export`: ONNX of the student with its label-text matrix, checked against PyTorch with onnxruntime."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.model_dir import load_model_dir
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.errors import VlkdError

log = logging.getLogger(__name__)
# ONNX is the one exported format, loadable by onnxruntime without PyTorch. TorchScript was dropped:
# torch.jit.trace/save/load are deprecated (FutureWarning since torch 2.14).
ONNX_OPSET = 18  # the lowest opset torch.export's ONNX exporter writes: the widest runtime support


class ExportError(VlkdError, RuntimeError):
    """An exported model does not reproduce the PyTorch outputs."""


class StudentWithText(nn.Module):
    """images (B, C, H, W) -> (normalised features (B, D), logits (B, L) = scale * features @ text.T)."""

    def __init__(self, student: nn.Module, text: torch.Tensor, logit_scale: float):
        super().__init__()
        self.student = student
        self.register_buffer("text", text.clone())
        self.logit_scale = float(logit_scale)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.student(images)
        return feats, self.logit_scale * feats @ self.text.T


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 atol: float = 1e-4, batch: int = 2) -> dict[str, Any]:
    """Export the model dir's student with all its label texts (Y_id then Y_ood) as ONNX; verify it."""
    student, card, text = load_model_dir(model_dir, "cpu")
    labels = card.labels["id"] + card.labels["ood"]
    wrapper = StudentWithText(student, torch.cat([text["id"], text["ood"]]), card.logit_scale).eval()
    out = Path(out_dir or Path(model_dir) / "export")
    example = torch.randn(batch, card.student["in_chans"], card.image_size, card.image_size,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_feats, ref_logits = wrapper(example)
    report: dict[str, Any] = {"labels": labels,
                              "input": [-1, card.student["in_chans"], card.image_size, card.image_size],
                              "mean": card.mean, "std": card.std, "files": {}, "max_abs_diff": {}}
    import onnxruntime as ort

    path = write_onnx(wrapper, example, out / "student.onnx", ["features", "logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feats, logits = session.run(None, {"images": example.numpy()})
    report["files"]["onnx"] = path.name
    report["max_abs_diff"]["onnx"] = _check("onnx", ref_feats, ref_logits, torch.from_numpy(feats),
                                            torch.from_numpy(logits), atol)
    atomic_write_json(out / "export.json", report)
    return report


def write_onnx(module: nn.Module, example: torch.Tensor, path: str | os.PathLike, output_names: list[str],
               input_name: str = "images") -> Path:
    """Write `module` as ONNX (opset ONNX_OPSET) with torch.export's exporter: one input `input_name` shaped like
    `example` but for a dynamic batch size, outputs `output_names` (batch first); the file appears atomically."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), None, input_names=[input_name], output_names=output_names,
                                    dynamic_shapes=({0: batch},), dynamo=True, opset_version=ONNX_OPSET,
                                    verbose=False)
    return atomic_write(path, lambda tmp: program.save(tmp))


def _check(name: str, ref_f: torch.Tensor, ref_l: torch.Tensor, feats: Any, logits: Any, atol: float) -> float:
    feat_diff = float((ref_f - feats).abs().max())
    logit_diff = float((ref_l - logits).abs().max()) / max(1.0, float(ref_l.abs().max()))
    diff = max(feat_diff, logit_diff)
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{name} export differs from PyTorch by {diff:.2e} (> {atol:.0e})")
    return diff
