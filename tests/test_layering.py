"""Imports flow one way (vlkd_formats <- sim <- vlkd_runtime <- training <- vlkd_ros.inference <- vlkd_ros.ros | vlkd_ros.pipeline
<- vlkd_ros.cli): the `.importlinter` contracts hold for the checkout, and they do catch an upward import."""
from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT_PACKAGES = ("vlkd_formats", "vlkd_runtime", "sim", "training", "vlkd_ros")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, *pythonpath: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: pip install -r requirements.txt (import-linter)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")])}
    # lint-imports reads .importlinter of the working directory; --no-cache: no .import_linter_cache/ written
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_checkout_keeps_every_contract():
    result = _lint(REPO, REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _copy_packages(dest: Path) -> None:
    """The Python sources of the root packages and the contract file (no assets)."""
    for package in ROOT_PACKAGES:
        shutil.copytree(REPO / package, dest / package,
                        ignore=lambda d, names: [n for n in names if not (n.endswith(".py") or (Path(d) / n).is_dir())
                                                 or n == "__pycache__"])
    shutil.copy2(REPO / ".importlinter", dest / ".importlinter")


@pytest.mark.parametrize("low, upward", [
    ("vlkd_formats/_upward.py", "import training.distill\n"),
    ("sim/_upward.py", "from vlkd_ros.inference import GraspFeasibility\n"),
    ("vlkd_runtime/_upward.py", "import training.grasp.model\n"),  # the runtime serving shares is below training
    ("vlkd_ros/inference/_upward.py", "def f():\n    import vlkd_ros.ros.perception_node\n"),  # lazy imports count
    ("vlkd_ros/ros/_upward.py", "import vlkd_ros.pipeline\n"),  # the two middle layers are independent
])
def test_an_upward_import_breaks_the_contract(tmp_path, low, upward):
    _copy_packages(tmp_path)
    (tmp_path / low).write_text(upward)
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0, result.stdout[-4000:]
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert "Data flows one way" in report and "is not allowed to import" in report, result.stdout[-4000:]
    assert Path(low).with_suffix("").as_posix().replace("/", ".") in report


def test_the_runtime_never_imports_torch(tmp_path):
    """What a serving process imports of vlkd_runtime needs no torch: even a lazy torch import there is refused."""
    _copy_packages(tmp_path)
    (tmp_path / "vlkd_runtime" / "_torch.py").write_text("def f():\n    import torch\n")
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0, result.stdout[-4000:]
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert "imports no torch" in report and "vlkd_runtime._torch -> torch" in report, result.stdout[-4000:]


def test_the_ignored_imports_are_annotations_only():
    """Each import `.importlinter` tells the cycle check to ignore sits under `if TYPE_CHECKING:`, never run."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    ignored = [line.split(" -> ") for line in config["importlinter:contract:no-cycles"]["ignore_imports"].split("\n")
               if line.strip()]
    assert ignored
    for importer, imported in ignored:
        tree = ast.parse((REPO / (importer.replace(".", "/") + ".py")).read_text())
        guarded = {id(node) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
        hits = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == imported]
        assert hits and all(id(node) in guarded for node in hits), f"{importer} imports {imported} at run time"
