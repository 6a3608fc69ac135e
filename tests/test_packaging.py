"""The wheel carries everything a non-editable install needs to run `vlkd demo`: the job configs, the open_clip model
configs, the object sets and splits, the shipped offline teacher, and every package of the import contracts.

The wheel is built from a copy of the working tree (tracked and untracked, not ignored files, but the shipped model's
serving files install.sh writes), so the build writes nothing into the checkout and no stale build/ folder can leak
files into it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ["training/configs", "training/model_configs", "training/assets/offline_teacher",
                "training/assets/table_teacher",
                "sim/assets/object_sets", "sim/assets/splits", "sim/assets/clutter"]


def _source_files() -> list[str]:
    """Tracked and untracked files, not ignored ones but the shipped model dirs' serving files (`onnx/`, which
    install.sh writes from the weights: a wheel built after it carries them)."""
    listed = []
    for which in (["-co"], ["-oi", "--", "vlkd_ros/models"]):
        try:
            listed += subprocess.run(["git", "ls-files", "-z", "--exclude-standard", *which], cwd=REPO, check=True,
                                     capture_output=True, text=True, timeout=60).stdout.split("\0")
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("not a git checkout: cannot tell the source files from build outputs")
    return [f for f in listed if f and (REPO / f).is_file()]


# A file in a model dir under vlkd_ros/models/ (added to the wheel's source copy): the shipped default model lives
# there, in subfolders, and must reach the wheel whether or not this checkout holds it yet.
MODEL_PROBE = "vlkd_ros/models/probe_model/onnx/student-probe.onnx"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    (src / MODEL_PROBE).parent.mkdir(parents=True, exist_ok=True)
    (src / MODEL_PROBE).write_bytes(b"probe")
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (found,) = out.glob("vlkd_ros-*.whl")
    return found


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_holds_the_package_data(wheel):
    names = _names(wheel)
    for folder in PACKAGE_DATA:
        shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).iterdir() if p.is_file())
        assert shipped, f"{folder} is empty in the checkout"
        missing = [n for n in shipped if n not in names]
        assert not missing, f"not in {wheel.name}: {missing}"
    assert {"training/configs/miniworld_resnet18.yaml", "training/configs/grasp_offline.yaml",
            "training/model_configs/VLKD-Tiny.json", "sim/assets/object_sets/offline.yaml",
            "sim/assets/splits/ycb_paper.yaml", "training/assets/offline_teacher/open_clip_model.safetensors",
            "training/assets/offline_teacher/open_clip_config.json",
            "training/assets/table_teacher/open_clip_model.safetensors",
            "training/assets/table_teacher/open_clip_config.json"} <= names
    assert not any(n.startswith("configs/") for n in names), "job configs belong inside the training package"
    assert MODEL_PROBE in names, "vlkd_ros/models/** (the shipped grasp model dirs) must be package data"
    shipped = REPO / "vlkd_ros" / "models" / "grasp_default"
    missing = [n for n in (p.relative_to(REPO).as_posix() for p in shipped.rglob("*") if p.is_file()) if n not in names]
    assert not missing, f"not in {wheel.name}: {missing}"


def test_wheel_holds_every_layer_of_the_import_contracts(wheel):
    names = _names(wheel)
    for package in ("vlkd_formats", "vlkd_runtime", "sim", "training", "training/grasp", "vlkd_ros", "vlkd_ros/inference",
                    "vlkd_ros/ros", "vlkd_ros/cli"):
        assert f"{package}/__init__.py" in names, package
    for module in ("vlkd_formats/config.py", "vlkd_formats/errors.py", "vlkd_ros/pipeline.py", "vlkd_ros/cli/flags.py"):
        assert module in names, module
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert "share/vlkd_ros/config/perception.yaml" in data and "share/vlkd_ros/package.xml" in data


def test_installed_wheel_finds_its_data_outside_the_checkout(wheel, tmp_path):
    """Installed into a plain folder (not editable) and run from elsewhere, the package finds the shipped configs
    by `configs/NAME.yaml`, the offline teacher, the object sets and the model configs inside itself."""
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                             str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    code = """
import sys
from pathlib import Path
from vlkd_formats.config import load_config
import sim.catalog, training.teacher, vlkd_ros.pipeline
from training.distill import DistillConfig
from training.grasp.eval import GraspTableConfig
root = Path(sys.argv[1]).resolve()
for module in (sim.catalog, training.teacher, vlkd_ros.pipeline):
    assert Path(module.__file__).resolve().is_relative_to(root), module.__file__
assert (sim.catalog.OBJECT_SETS_DIR / "offline.yaml").is_file()
assert all((folder / "open_clip_model.safetensors").is_file() for folder in training.teacher.SHIPPED_TEACHERS.values())
assert Path(training.teacher.PACKAGED_MODEL_CONFIGS).is_dir()
assert vlkd_ros.pipeline.BASE_CONFIG.is_file()
import vlkd_ros.inference.model_paths as paths
assert paths.SHIPPED_MODEL_DIR.resolve() == root / "vlkd_ros" / "models" / "grasp_default"
assert (root / "vlkd_ros" / "models" / "probe_model" / "onnx" / "student-probe.onnx").is_file()
load_config(DistillConfig, "configs/miniworld_resnet18.yaml")
load_config(GraspTableConfig, "grasp_table_offline")
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_lock_records_versions_only():
    """constraints-lock.txt: `name==version` per line, no machine paths (`name @ file:///...`)."""
    import re

    lines = [ln for ln in (REPO / "constraints-lock.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    bad = [ln for ln in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", ln)]
    assert lines and not bad, bad
    names = [ln.split("==")[0].lower() for ln in lines]
    assert len(names) == len(set(names)) and "import-linter" in names


def test_install_writes_the_resolved_set_outside_the_tracked_files(tmp_path):
    """install.sh writes `.venv/constraints-resolved.txt` through scripts/update_lock.sh, the same clean form the
    tracked lock has; only an explicit `scripts/update_lock.sh` rewrites constraints-lock.txt."""
    install = (REPO / "install.sh").read_text()
    assert "> constraints-lock.txt" not in install
    assert 'scripts/update_lock.sh "$VENV/constraints-resolved.txt"' in install
    out = tmp_path / "resolved.txt"
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    result = subprocess.run([str(REPO / "scripts" / "update_lock.sh"), str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert lines and all("==" in ln and "@" not in ln and "file:" not in ln for ln in lines)
    assert not any(ln.lower().startswith(("vlkd-ros==", "vlkd_ros==", "pip==")) for ln in lines)
