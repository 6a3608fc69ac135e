"""ONNX export of the grasp student's image encoder (object text stays open-vocabulary, so it is not baked in),
verified against PyTorch with onnxruntime."""
from __future__ import annotations

import copy
import os

import numpy as np
import torch

from training.export import ExportError, write_onnx
from training.students import Student


def export_student_onnx(student: Student, image_size: int, path: str | os.PathLike, atol: float = 1e-4) -> float:
    """Write `images (B, C, S, S) -> features (B, D)` as ONNX (dynamic batch) and return its max deviation
    from PyTorch on a random batch; raises ExportError above `atol`."""
    import onnxruntime as ort

    student = copy.deepcopy(student).cpu().eval()
    example = torch.randn(2, student.config.in_chans, image_size, image_size,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = student(example)
    path = write_onnx(student, example, path, ["features"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": example.numpy()})[0]
    diff = float(np.abs(out - ref.numpy()).max())
    if not np.isfinite(diff) or diff > atol:
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX export {path} differs from PyTorch by {diff:.2e} (> {atol:.0e})")
    return diff
