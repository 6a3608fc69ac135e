"""The ROS user's path: `colcon build` of vlkd_interfaces and vlkd_ros in a workspace, then the node started from
the install space the way `ros2 run` / `ros2 launch` start it (install/vlkd_ros/lib/vlkd_ros/vlkd_perception with the
installed share/vlkd_ros/config params file), answering a client process in a shell that sourced the workspace.

The workspace is a temporary folder whose src/ holds a copy of this checkout (its tracked and untracked, not ignored
files: the build writes nothing into the checkout) and of vlkd_interfaces beside it. Nothing of the checkout's own
build (install/vlkd_interfaces, the checkout on PYTHONPATH) is on the paths: what runs comes from the workspace.
Built against this interpreter's ROS 2 wheels (Kilted in .venv, Jazzy in .venv-jazzy).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ros_peers import DISTRO, INSTALL, ROOT, isolated_ros_env, parse_checks
from test_perception_node import known_objects

CLIENT = Path(__file__).with_name("workspace_client.py")
COLCON = Path(sys.executable).with_name("colcon")
BUILD_TIMEOUT_S = 900
CLIENT_TIMEOUT_S = 180
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(not COLCON.is_file(), reason="no colcon in this venv (scripts/build_interfaces.sh "
                                                               "installs it with the ROS build wheels)"),
              pytest.mark.skipif(not INSTALL.is_dir(), reason=f"{INSTALL} not built (install.sh builds it)")]


def source_files() -> list[str]:
    """The checkout's tracked and untracked, not ignored files (what a clone plus the work in progress holds)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True, timeout=60).stdout.split("\0")
    return [f for f in listed if f and (ROOT / f).is_file()]


def without_checkout(env: dict) -> dict:
    """env less the checkout's own vlkd_interfaces build and the checkout itself on the search paths."""
    env = dict(env)
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        kept = [p for p in env.get(name, "").split(os.pathsep)
                if p and not p.startswith(str(INSTALL.parent)) and Path(p) != ROOT]
        env[name] = os.pathsep.join(kept)
        if not env[name]:
            del env[name]
    return env


def in_workspace(ws: Path, *cmd: str) -> list[str]:
    """A command run in a bash that sourced the workspace, as a ROS user's terminal does."""
    return ["bash", "-c", f"cd {shlex.quote(str(ws))} && . install/local_setup.bash && exec {shlex.join(cmd)}"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colcon workspace with vlkd_interfaces and vlkd_ros built into ws/install (a minute or two: C type support)."""
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: cannot tell the source files from build outputs")
    ws = tmp_path_factory.mktemp("colcon_ws")
    for name in source_files():
        if name.startswith("vlkd_interfaces/"):
            dest = ws / "src" / name
        else:
            dest = ws / "src" / "vlkd_ros" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    venv = Path(sys.executable).parents[1]
    # The pip wheels' CMake exports name include dirs of their build machine; scripts/build_interfaces.sh keeps
    # machine-wide links to this venv's (relinking them first, also when its own build is up to date), and another
    # checkout's venv may have left them pointing at a deleted one.
    linked = subprocess.run([str(ROOT / "scripts" / "build_interfaces.sh")], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "VENV": str(venv), "VLKD_ROS_DISTRO": DISTRO}, timeout=BUILD_TIMEOUT_S)
    assert linked.returncode == 0, linked.stdout + linked.stderr
    env = without_checkout(dict(os.environ))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.update(PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]), CMAKE_PREFIX_PATH=str(venv),
               AMENT_PREFIX_PATH=str(venv), MAKEFLAGS=f"-j{os.cpu_count() or 1}")
    # colcon's defaults (no build type: the generated type support compiles fastest); the pip wheels' CMake needs
    # to be told which Python (the venv's, with numpy), as scripts/build_interfaces.sh does.
    cmd = [str(COLCON), "build", "--event-handlers", "console_cohesion+", "status-",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    (ws / "colcon_build.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"colcon build failed ({DISTRO}): {(proc.stdout + proc.stderr)[-4000:]}"
    return ws


def test_colcon_installs_the_ament_python_layout(workspace: Path) -> None:
    """Executables in lib/vlkd_ros (where ros2 run/launch look), launch file, params, package.xml and the ament
    index entry in share, the Python packages with their package data, and the built interfaces beside them."""
    pkg = workspace / "install" / "vlkd_ros"
    for exe in ("vlkd_perception", "vlkd"):
        assert os.access(pkg / "lib" / "vlkd_ros" / exe, os.X_OK), f"no executable lib/vlkd_ros/{exe}"
    assert not (pkg / "bin").exists(), "console scripts belong in lib/vlkd_ros, not bin/"
    share = pkg / "share" / "vlkd_ros"
    for name in ("package.xml", "launch/perception.launch.py", "config/perception.yaml",
                 "config/fastdds_large_frames.xml"):
        assert (share / name).is_file(), f"share/vlkd_ros/{name} missing"
    assert (share / "config" / "perception.yaml").read_text() == (ROOT / "config" / "perception.yaml").read_text()
    assert (pkg / "share" / "ament_index" / "resource_index" / "packages" / "vlkd_ros").is_file()
    site = pkg / "lib" / PYVER / "site-packages"
    for name in ("vlkd_ros/ros/perception_node.py", "vlkd_ros/inference/__init__.py", "vlkd_formats/__init__.py",
                 "training/configs/grasp_offline.yaml", "training/model_configs/VLKD-Tiny.json"):
        assert (site / name).is_file(), f"{name} not installed"
    interfaces = workspace / "install" / "vlkd_interfaces"
    assert (interfaces / "lib" / PYVER / "site-packages" / "vlkd_interfaces" / "srv" / "__init__.py").is_file()
    assert (interfaces / "share" / "ament_index" / "resource_index" / "packages" / "vlkd_interfaces").is_file()


@pytest.mark.parametrize("autostart", [True, False], ids=["autostart", "lifecycle_manager"])
def test_installed_node_answers_a_client(workspace: Path, procs, grasp_model_dir: Path, autostart: bool) -> None:
    """install/vlkd_ros/lib/vlkd_ros/vlkd_perception with the installed params file and model_dir answers
    IsGraspable from a client in a sourced shell; with autostart:=false it waits for the client to configure and
    activate it, as a lifecycle manager would. vlkd_ros and vlkd_interfaces come from the workspace."""
    env, ns = isolated_ros_env()
    env = without_checkout(env)
    install = workspace / "install"
    params = install / "vlkd_ros" / "share" / "vlkd_ros" / "config" / "perception.yaml"
    node_cmd = in_workspace(workspace, str(install / "vlkd_ros" / "lib" / "vlkd_ros" / "vlkd_perception"),
                            "--ros-args", "-r", f"__ns:={ns}", "--params-file", str(params),
                            "-p", f"model_dir:={grasp_model_dir}", "-p", f"autostart:={str(autostart).lower()}",
                            "-p", "results_rate:=0.0")
    node = procs(node_cmd, env, "node")
    name = known_objects(grasp_model_dir)[0]
    config = {"node": f"{ns}/vlkd_perception", "name": name, "manage": not autostart}
    proc = subprocess.run(in_workspace(workspace, sys.executable, str(CLIENT), json.dumps(config)), env=env,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    checks = parse_checks(proc.stdout)
    log = node.output()
    assert proc.returncode == 0, f"client failed ({proc.returncode}) {checks}\n{proc.stderr[-3000:]}\nnode:\n{log[-3000:]}"

    where = checks["where"]
    for key in ("vlkd_ros", "prefix", "share"):
        assert Path(where[key]).resolve().is_relative_to(install / "vlkd_ros"), (key, where[key])
    for key in ("vlkd_interfaces", "interfaces_prefix"):
        assert Path(where[key]).resolve().is_relative_to(install / "vlkd_interfaces"), (key, where[key])
    assert checks["services"]["ok"], log
    if not autostart:
        assert checks["before_manager"]["state"] == "unconfigured", checks
        assert checks["transition_1"]["ok"] and checks["transition_3"]["ok"], (checks, log[-3000:])
    assert checks["state"]["state"] == "active", (checks, log[-3000:])
    answer = checks["is_graspable"]
    assert answer["answered"] and answer["success"], (answer, log[-3000:])
    assert 0.0 <= answer["score"] <= 1.0 and "zero-shot" not in answer["message"], answer
    assert node.stop() == 0, log[-3000:]
