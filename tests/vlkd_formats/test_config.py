"""Config loading: YAML + dotted overrides into typed dataclasses, with clear errors."""
import pytest

from vlkd_formats.config import ConfigError, load_config
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


SHIPPED = {"miniworld_resnet18.yaml": "training.distill:DistillConfig",
           "paper_vitl14_resnet18.yaml": "training.distill:DistillConfig",
           "pretrain_teacher.yaml": "training.pretrain_teacher:PretrainConfig",
           "pretrain_teacher_scenes.yaml": "training.pretrain_teacher:PretrainConfig",
           "pretrain_teacher_table.yaml": "training.pretrain_teacher:PretrainConfig",
           "grasp_offline.yaml": "training.grasp.train:GraspTrainConfig",
           "grasp_ycb_vitl14.yaml": "training.grasp.train:GraspTrainConfig",
           "grasp_table_offline.yaml": "training.grasp.eval:GraspTableConfig",
           "grasp_default.yaml": "training.grasp.train:GraspTrainConfig",
           "grasp_paper.yaml": "training.grasp.train:GraspTrainConfig",
           "grasp_table_default.yaml": "training.grasp.eval:GraspTableConfig"}


def test_every_shipped_config_loads_and_validates():
    import importlib
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    assert sorted(p.name for p in configs.glob("*.yaml")) == sorted(SHIPPED)
    for name, target in SHIPPED.items():
        module, cls = target.split(":")
        load_config(getattr(importlib.import_module(module), cls), configs / name)
    from sim.config import ClassificationConfig, ClutterConfig

    for name in ("clutter_train", "clutter_heldout", "clutter_shift"):  # sim/configs, by their shipped names
        assert load_config(ClutterConfig, name).image_size == 128
    sim_configs = {"teacher_clutter": ClutterConfig, "teacher_renders": ClassificationConfig,
                   "teacher_renders_mini": ClassificationConfig}
    assert sorted(p.stem for p in (configs.parents[1] / "sim" / "configs").glob("*.yaml")) == sorted(
        ["clutter_train", "clutter_heldout", "clutter_shift", *sim_configs])
    for name, cls in sim_configs.items():
        load_config(cls, name)
    paper = load_config(DistillConfig, configs / "paper_vitl14_resnet18.yaml")
    assert (paper.teacher.model, paper.teacher.pretrained, paper.student.arch) == ("ViT-L-14", "openai", "resnet18")


@pytest.mark.slow
def test_paper_config_trains_with_a_randomly_initialised_vit_l_14(tiny_dataset, tmp_path):
    """The real ViT-L-14 path (architecture, 224 px preprocessing, teacher cache, training) without its weights,
    which need the internet: `python -m pytest -m slow -k paper_config`."""
    import json
    from pathlib import Path

    from training.distill import distill

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    config = load_config(DistillConfig, configs / "paper_vitl14_resnet18.yaml", [
        "teacher.pretrained=null", f"data.root={tiny_dataset}", f"output_dir={tmp_path / 'run'}",
        f"teacher.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", "optim.epochs=1", "optim.batch_size=8",
        "teacher.batch_size=8", "teacher.device=cpu"])
    model_dir = distill(config)
    card = json.loads((Path(model_dir) / "model.json").read_text())
    assert card["image_size"] == 224 and card["embed_dim"] == 768
