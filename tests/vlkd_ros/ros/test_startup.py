"""How `vlkd serve` starts over real DDS: a model dir that does not load ends it (autostart) or leaves it unconfigured
(lifecycle manager), a second node of the same name is refused, and the log and /diagnostics name the resolved
model and state dirs. Each node is a real `vlkd serve` process; this process is its client."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ros_peers import ROOT
from test_perception_node import serve_cmd

pytestmark = pytest.mark.ros

START_TIMEOUT_S = 120  # a refused start takes ~10 s here (rclpy, torch and the model card); a full load ~20 s


def unconfigured_cmd(model_dir: Path, namespace: str) -> list[str]:
    """`vlkd serve` waiting for a lifecycle manager (autostart:=false)."""
    return serve_cmd(model_dir, namespace, "autostart:=false")


def refused(cmd: list[str], env: dict) -> tuple[int, list[str]]:
    """Run a `vlkd serve` that should end by itself: (exit status, its stderr lines)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, cwd=ROOT)
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.fixture
def client(ros_env, monkeypatch):
    """make(node_name): a PerceptionClient of a node in this test's ROS domain, with lifecycle and parameter calls."""
    env, _ = ros_env
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(name, env[name])
    import rclpy

    from node_driver import Driver

    rclpy.init()
    made = []

    def make(node_name: str) -> Driver:
        made.append(Driver(node_name))
        return made[-1]

    yield make
    for driver in made:
        driver.close()
    rclpy.try_shutdown()


def lifecycle_state(driver, node_name: str) -> str:
    """The node's lifecycle state label, from its ~/get_state service."""
    from lifecycle_msgs.srv import GetState

    get_state = driver.node.create_client(GetState, f"{node_name}/get_state")
    assert get_state.wait_for_service(timeout_sec=30.0), f"{node_name}/get_state not found"
    reply = driver.call(get_state, GetState.Request(), timeout=30.0)
    driver.node.destroy_client(get_state)
    return reply.current_state.label


@pytest.mark.parametrize("damage", ["missing", "corrupt_encoder"])
def test_autostart_ends_on_a_model_dir_that_does_not_load(ros_env, grasp_model_dir: Path, tmp_path: Path,
                                                          damage: str) -> None:
    """A model dir that is not there (configure finds no card) or whose image encoder (the ONNX file the node serves)
    does not load (activate fails) ends `vlkd serve` with exit status 2 and the reason on one line, stated once, no
    traceback."""
    env, ns = ros_env
    model_dir = tmp_path / "missing"
    if damage == "corrupt_encoder":
        model_dir = grasp_model_dir
        encoders = list((model_dir / "onnx").glob("*.onnx"))
        assert encoders
        for encoder in encoders:
            encoder.write_bytes(b"not an onnx file")
    status, lines = refused(serve_cmd(model_dir, ns), env)
    assert status == 2, lines[-20:]
    assert lines[-1].startswith(f"vlkd serve: error: cannot load the model from '{model_dir}': "), lines[-20:]
    assert [line for line in lines if "cannot load the model" in line] == lines[-1:], lines
    assert not any("Traceback" in line for line in lines), lines
    if damage == "corrupt_encoder":  # configure passed, resolving the dirs, and logged them before activate failed
        assert any(f"configured: model_dir={model_dir.resolve()} " in line for line in lines), lines


def test_under_a_lifecycle_manager_a_model_dir_that_does_not_load_leaves_it_unconfigured(ros_env, procs, client,
                                                                                          tmp_path: Path) -> None:
    """autostart:=false: configure fails on a missing model dir, the node stays unconfigured and up, saying why on
    /diagnostics, and Ctrl-C ends it with status 0."""
    from lifecycle_msgs.msg import Transition

    from node_driver import wait_until

    env, ns = ros_env
    model_dir, name = tmp_path / "missing", f"{ns}/vlkd_perception"
    node = procs(unconfigured_cmd(model_dir, ns), env, "node")
    driver = client(name)
    assert driver.wait_for_services(START_TIMEOUT_S), node.output()[-3000:]
    assert lifecycle_state(driver, name) == "unconfigured"
    assert not driver.transition(Transition.TRANSITION_CONFIGURE), node.output()[-3000:]
    assert lifecycle_state(driver, name) == "unconfigured"
    reason = f"cannot load the model from '{model_dir}': ModelDirError: "
    assert wait_until(lambda: any(d["message"].startswith(f"node unconfigured: {reason}") for d in driver.diagnostics),
                    10.0), driver.diagnostics[-3:]
    assert driver.diagnostics[-1]["model_dir"] == str(model_dir)
    assert node.popen.poll() is None, node.output()[-3000:]
    assert node.stop() == 0, node.output()[-3000:]
    assert reason in node.output()


def test_a_second_node_of_the_same_name_is_refused_and_paths_are_resolved(ros_env, procs, client,
                                                                           grasp_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """The first node, given its run dir and a relative state dir, logs and publishes both resolved. A second
    `vlkd serve` under the same name ends with status 2 naming the first and the domain before it reads any model
    dir; the first goes on answering. A node of the same name in another namespace starts."""
    from node_driver import wait_until
    from vlkd_interfaces.srv import ListObjects

    env, ns = ros_env
    name = f"{ns}/vlkd_perception"
    state_dir = Path(os.path.relpath(tmp_path / "state", ROOT))
    cmd = serve_cmd(tmp_path, ns)
    at = cmd.index("--ros-args")
    first = procs([*cmd[:at], "--state-dir", str(state_dir), *cmd[at:]], env, "first")
    driver = client(name)
    assert driver.wait_for_services(START_TIMEOUT_S), first.output()[-3000:]
    assert wait_until(lambda: bool(driver.diagnostics) and driver.diagnostics[-1]["state"] == "active",
                    START_TIMEOUT_S), first.output()[-3000:]
    model_dir, resolved_state = grasp_model_dir.resolve(), (tmp_path / "state").resolve()
    assert f"configured: model_dir={model_dir} state_dir={resolved_state} " in first.output()
    assert (driver.diagnostics[-1]["model_dir"], driver.diagnostics[-1]["state_dir"]) == (str(model_dir),
                                                                                          str(resolved_state))

    status, lines = refused(serve_cmd(grasp_model_dir, ns), env)
    assert status == 2, lines[-20:]
    assert lines[-1].startswith(f"vlkd serve: error: a node named {name} is already running in ROS domain "
                                f"{env['ROS_DOMAIN_ID']} ("), lines[-20:]
    assert not any("configured:" in line or "Traceback" in line for line in lines), lines

    other = procs(unconfigured_cmd(grasp_model_dir, f"{ns}/other"), env, "other")
    other_driver = client(f"{ns}/other/vlkd_perception")
    assert other_driver.wait_for_services(START_TIMEOUT_S), other.output()[-3000:]
    assert lifecycle_state(other_driver, f"{ns}/other/vlkd_perception") == "unconfigured"
    listed = driver.call(driver.list, ListObjects.Request())
    assert listed is not None and listed.names and listed.model_version, listed
    assert first.popen.poll() is None and other.popen.poll() is None
    assert first.stop() == 0 and other.stop() == 0, first.output()[-3000:]
