"""`vlkd export`: TorchScript and ONNX of the student with its label-text matrix, checked against PyTorch."""
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

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")


class ExportError(RuntimeError):
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
                 formats: tuple[str, ...] = FORMATS, atol: float = 1e-4, batch: int = 2) -> dict[str, Any]:
    """Export the model dir's student with all its label texts (Y_id then Y_ood); verify each export."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {FORMATS}")
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
    if "torchscript" in formats:
        path = out / "student.torchscript.pt"
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, example)
        atomic_write(path, lambda tmp: traced.save(tmp))
        with torch.no_grad():
            feats, logits = torch.jit.load(str(path))(example)
        report["files"]["torchscript"] = path.name
        report["max_abs_diff"]["torchscript"] = _check("torchscript", ref_feats, ref_logits, feats, logits, atol)
    if "onnx" in formats:
        import onnxruntime as ort

        path = out / "student.onnx"
        atomic_write(path, lambda tmp: torch.onnx.export(
            wrapper, (example,), tmp, input_names=["images"], output_names=["features", "logits"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False, opset_version=17))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feats, logits = session.run(None, {"images": example.numpy()})
        report["files"]["onnx"] = path.name
        report["max_abs_diff"]["onnx"] = _check("onnx", ref_feats, ref_logits, torch.from_numpy(feats),
                                                torch.from_numpy(logits), atol)
    atomic_write_json(out / "export.json", report)
    return report


def _check(name: str, ref_f: torch.Tensor, ref_l: torch.Tensor, feats: Any, logits: Any, atol: float) -> float:
    feat_diff = float((ref_f - feats).abs().max())
    logit_diff = float((ref_l - logits).abs().max()) / max(1.0, float(ref_l.abs().max()))
    diff = max(feat_diff, logit_diff)
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{name} export differs from PyTorch by {diff:.2e} (> {atol:.0e})")
    return diff
