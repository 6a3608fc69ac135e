"""One config path and one error type: flags derived from config fields, shipped configs found by name from any
directory, and every library error ends `vlkd` with one line and exit status 2."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from vlkd_formats.config import ConfigError, load_config, resolve_config_path
from vlkd_formats.errors import VlkdError
from vlkd_ros.cli import COMMAND_MODULES, build_parser, main
from vlkd_ros.cli.flags import add_config_flags, flag_overrides, yaml_value


@dataclass
class ToyConfig:
    image_size: int = field(default=128, metadata={"help": "square side in pixels"})
    rate: float = 30.0
    name: str = "mug"
    mode: Literal["fast", "exact"] = "fast"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    labels: list[str] | str | None = None
    verbose: bool = False
    extents: tuple[float, float] = (0.1, 0.2)


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_flags(parser, ToyConfig, **kwargs)
    return parser


def test_flags_come_from_the_fields():
    parser = _parser()
    text = parser.format_help()
    assert "--image-size IMAGE_SIZE" in text and "square side in pixels (default 128)" in text
    assert "{fast,exact}" in text and "--verbose, --no-verbose" in text
    args = parser.parse_args([])
    assert flag_overrides(args, ToyConfig) == []  # nothing given: the dataclass (or YAML) defaults stand
    assert load_config(ToyConfig, None, flag_overrides(args)) == ToyConfig()


def test_given_flags_become_overrides_of_the_one_loader():
    args = _parser().parse_args(["--image-size", "64", "--rate", "15", "--name", "", "--mode", "exact",
                                 "--seeds", "3", "4", "--labels", "coffee mug, dice", "--verbose",
                                 "--extents", "1", "2"])
    overrides = flag_overrides(args, ToyConfig)
    assert overrides[0] == "image_size=64"
    config = load_config(ToyConfig, None, overrides)
    assert config == ToyConfig(image_size=64, rate=15.0, name="", mode="exact", seeds=[3, 4],
                               labels="coffee mug, dice", verbose=True, extents=(1.0, 2.0))


@pytest.mark.parametrize("value", ["", "null", "none", "1e-4", "0.5", "a: b", "x,y", "/camera/image_raw", 3, 2.5,
                                   1e-5, True, [1, 2], ["a b", "c"]])
def test_flag_values_read_back_unchanged(value):
    import yaml

    assert yaml.safe_load(yaml_value(value)) == value


def test_only_the_named_fields_and_a_prefix():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, ToyConfig, ("rate",), prefix="camera.", help={"rate": "frames per second"})
    assert "frames per second (default 30.0)" in parser.format_help()
    assert flag_overrides(parser.parse_args(["--rate", "5"])) == ["camera.rate=5.0"]
    with pytest.raises(ValueError, match="no field 'nope'"):
        add_config_flags(argparse.ArgumentParser(), ToyConfig, ("nope",))


def test_every_existing_flag_is_still_there():
    """The flag names (and defaults) the README, tests and launch files use, now derived from config fields."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    collect = next(a for a in sub["collect"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    expected = {
        collect["classification"]: ["--config", "--out", "--overwrite", "--objects", "--labels", "--split",
                                    "--ood-fraction", "--val-fraction", "--image-size", "--seed", "--workers",
                                    "--sim-backend", "--num-envs", "--per-class"],
        collect["clutter"]: ["--episodes", "--min-objects", "--max-objects", "--visible-threshold"],
        sub["sim-camera"]: ["--source", "--env-id", "--images", "--topic", "--depth-topic", "--camera-info-topic",
                            "--hand-topic", "--hand-depth-topic", "--rate", "--image-size", "--camera", "--seed",
                            "--scene-period", "--sim-backend", "--reliability", "--frames"],
        sub["demo"]: ["--quick", "--workdir", "--data-dir", "--workers", "--epochs", "--fewshot-steps"],
        sub["reproduce"]: ["--seeds", "--rows"],
    }
    for p, flags in expected.items():
        have = {s for a in p._actions for s in a.option_strings}
        assert set(flags) <= have, (p.prog, sorted(set(flags) - have))


def test_sim_camera_flags_map_onto_its_config(tmp_path):
    from vlkd_ros.ros.sim_camera_config import SimCameraConfig

    args = build_parser().parse_args(["sim-camera", "--source", "images", "--images", str(tmp_path), "--rate", "15",
                                      "--image-size", "96", "--depth-topic", "/d", "--reliability", "reliable"])
    config = load_config(SimCameraConfig, None, flag_overrides(args, SimCameraConfig))
    assert config == SimCameraConfig(source="images", images=str(tmp_path), rate=15.0, image_size=96,
                                     depth_topic="/d", reliability="reliable")
    defaults = load_config(SimCameraConfig, None, flag_overrides(build_parser().parse_args(["sim-camera"])))
    assert defaults == SimCameraConfig()


def test_demo_flags_apply_after_quick():
    from vlkd_ros.cli.miniworld import _miniworld

    args = build_parser().parse_args(["demo", "--quick", "--epochs", "2", "--workers", "3"])
    config = _miniworld(args, "runs/demo")
    assert (config.workdir, config.epochs, config.workers, config.per_class) == ("runs/demo-quick", 2, 3, 10)
    args = build_parser().parse_args(["reproduce", "--workdir", "w", "--seeds", "7"])
    assert _miniworld(args, "runs/reproduce").workdir == "w"
    assert flag_overrides(args) == ["workdir=w", "seeds=[7]"]


@pytest.mark.parametrize("given", ["configs/grasp_offline.yaml", "grasp_offline.yaml", "grasp_offline"])
def test_shipped_configs_are_found_from_any_directory(tmp_path, monkeypatch, given):
    from training.grasp.train import GraspTrainConfig

    monkeypatch.chdir(tmp_path)
    path = resolve_config_path(given, GraspTrainConfig)
    assert path.name == "grasp_offline.yaml" and path.parent.name == "configs" and path.parent.parent.name == "training"
    load_config(GraspTrainConfig, given)


def test_a_local_file_wins_and_a_missing_one_lists_the_shipped(tmp_path, monkeypatch):
    from training.distill import DistillConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "miniworld_resnet18.yaml").write_text("seed: 7\n")
    assert load_config(DistillConfig, "configs/miniworld_resnet18.yaml").seed == 7
    with pytest.raises(ConfigError, match="paper_vitl14_resnet18.yaml"):
        load_config(DistillConfig, "configs/no_such_config.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DistillConfig, tmp_path / "absent.yaml")


def test_the_shipped_table_config_finds_its_training_config_from_elsewhere(tmp_path, monkeypatch):
    """grasp_table_offline.yaml names `configs/grasp_offline.yaml`; that resolves outside the checkout too."""
    from training.grasp.eval import GraspTableConfig
    from training.grasp.train import GraspTrainConfig

    monkeypatch.chdir(tmp_path)
    table = load_config(GraspTableConfig, "configs/grasp_table_offline.yaml")
    assert load_config(GraspTrainConfig, table.train_config).data is not None


LIBRARY_ERRORS = ["vlkd_formats.config:ConfigError", "vlkd_formats.dataset_dir:DatasetFormatError",
                  "vlkd_formats.object_registry:RegistryError", "vlkd_formats.errors:StorageError",
                  "sim.errors:SimError", "training.data:DatasetError", "training.checkpoint:CheckpointError",
                  "training.students:StudentError", "training.text:LabelTextError", "training.export:ExportError",
                  "training.describe:DescribeError", "training.teacher:TeacherLoadError",
                  "training.grasp.text:TextTowerError", "training.feature_cache:CorruptImagesError",
                  "vlkd_formats.model_dir:ModelDirError", "vlkd_ros.cli:CLIError",
                  "training.grasp.finetune_model:FinetuneRefused"]


@pytest.mark.parametrize("target", LIBRARY_ERRORS)
def test_every_library_error_is_a_vlkd_error(target):
    module, name = target.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), VlkdError)


def _one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vlkd {command}: error: "), captured.err[-2000:]
    return lines[0]


@pytest.mark.parametrize("card", [None, '{"kind": "grasp"}', "not json"])
def test_export_of_a_dir_that_is_not_a_model_dir(tmp_path, capsys, card):
    model = tmp_path / "not_a_model"
    model.mkdir()
    if card is not None:
        (model / "model.json").write_text(card)
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "export")]) == 2
    _one_error_line(capsys, "export")
    assert not (tmp_path / "export").exists()


def test_describe_without_a_local_language_model(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "descriptions.yaml"
    assert main(["describe", "--dataset", str(tiny_dataset), "--lm", str(tmp_path / "no_lm"), "--out", str(out)]) == 2
    assert "is not a local transformers model folder" in _one_error_line(capsys, "describe")
    assert not out.exists()


def test_a_multi_line_library_error_prints_one_line(capsys, monkeypatch):
    import vlkd_ros.cli.tools as tools

    def boom(args):
        raise ConfigError("first line\n  second line\n")

    monkeypatch.setattr(tools, "run_split", boom)
    assert main(["split", "--source", "s", "--out", "o"]) == 2
    assert _one_error_line(capsys, "split") == "vlkd split: error: first line second line"


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_each_cli_module_names_the_subcommands_it_registers(name):
    """build_parser(command) registers only the module whose COMMANDS has it: COMMANDS must be exactly its list."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    module = importlib.import_module(f"vlkd_ros.cli.{name}")
    module.register(sub)
    assert tuple(sub.choices) == module.COMMANDS
    assert set(build_parser(module.COMMANDS[0])._subparsers._group_actions[0].choices) == set(module.COMMANDS)


def test_serve_parses_without_loading_the_trainer():
    """`vlkd serve`'s parser loads neither training nor sim (a serving process holds no trainer module); an unknown
    command still gets the error that lists every command."""
    code = ("import sys; from vlkd_ros.cli import build_parser; build_parser('serve').parse_args(['serve']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'training', 'sim'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(SystemExit):
        main(["no-such-command"])
