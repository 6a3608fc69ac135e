"""Config loading: YAML + dotted overrides into typed dataclasses, with clear errors."""
import pytest

from training.config import ConfigError, load_config
from training.distill import DistillConfig


def test_defaults_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("student:\n  arch: resnet34\noptim:\n  lr: 0.01\n")
    cfg = load_config(DistillConfig, path, ["optim.lr=0.5", "student.in_chans=4", "teacher.pretrained=null"])
    assert cfg.student.arch == "resnet34" and cfg.student.in_chans == 4
    assert cfg.optim.lr == 0.5 and cfg.teacher.pretrained is None
    assert cfg.teacher.model == "ViT-L-14"  # documented default


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=1"], "unknown key"),
    (["optim.epochs=two"], "expected int"),
    (["optim.optimizer=lbfgs"], "not one of"),
    (["student.arch=alexnet"], "unknown student arch"),
    (["losses=[{type: nope}]"], "unknown loss type"),
    (["optim.lr"], "key.sub=value"),
])
def test_bad_config_is_rejected_with_the_reason(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(DistillConfig, None, override)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DistillConfig, tmp_path / "nope.yaml")
