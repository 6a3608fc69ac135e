"""ONNX export with torch.export's exporter: dynamic batch, checked against PyTorch, and free of deprecation
warnings from any source (the TorchScript export was dropped because torch.jit warns that it is deprecated)."""
import warnings

import numpy as np
import onnxruntime as ort
import torch

from training.export import StudentWithText, write_onnx
from training.grasp.export import export_student_onnx
from training.students import Student, StudentConfig


def _deprecations(record):
    return [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in record
            if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]


def test_student_with_text_exports_with_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    student = Student(StudentConfig(arch="resnet18"), 16, 32).eval()
    text = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    wrapper = StudentWithText(student, text, 50.0).eval()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        path = write_onnx(wrapper, torch.randn(2, 3, 32, 32), tmp_path / "student.onnx", ["features", "logits"])
    assert not _deprecations(record), _deprecations(record)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["features", "logits"]
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        feats, logits = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref_feats, ref_logits = wrapper(x)
        assert feats.shape == (batch, 16) and logits.shape == (batch, 5)
        assert np.abs(feats - ref_feats.numpy()).max() < 1e-4 and np.abs(logits - ref_logits.numpy()).max() < 1e-3


def test_grasp_student_export_is_checked_and_warning_free(tmp_path):
    torch.manual_seed(0)
    student = Student(StudentConfig(arch="resnet18", in_chans=4), 16, 32)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        diff = export_student_onnx(student, 32, tmp_path / "grasp.onnx")
    assert not _deprecations(record), _deprecations(record)
    assert diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "grasp.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((5, 4, 32, 32), np.float32)})[0].shape == (5, 16)
