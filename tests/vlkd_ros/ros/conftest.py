"""Fixtures for the ROS node tests: an isolated DDS environment per test, peer processes, camera frames."""
from __future__ import annotations

from pathlib import Path

import pytest

from ros_peers import INSTALL, Proc, isolated_ros_env


@pytest.fixture
def ros_env() -> tuple[dict, str]:
    """A fresh isolated (environment, namespace) for this test's processes."""
    if not INSTALL.is_dir():
        pytest.skip(f"{INSTALL} not built; run scripts/build_interfaces.sh (install.sh does)")
    return isolated_ros_env()


@pytest.fixture
def procs(tmp_path: Path):
    """Start peer processes with procs(cmd, env, name); all are stopped (SIGINT) at the end of the test."""
    started: list[Proc] = []

    def start(cmd: list[str], env: dict, name: str) -> Proc:
        proc = Proc(cmd, env, tmp_path, name)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="session")
def camera_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 8 small synthetic frames (a red or blue disc on grey) for `vlkd sim-camera --source images`."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("camera")
    for i in range(8):
        img = Image.new("RGB", (96, 96), (120 + 5 * i, 120, 120))
        ImageDraw.Draw(img).ellipse((20 + i, 24, 70 + i, 74), fill=(220, 40, 40) if i % 2 else (40, 60, 220))
        img.save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture
def grasp_model_dir(tiny_grasp_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny grasp model dir (the node's few-shot jobs write to it)."""
    from grasp_fixtures import copy_model

    return copy_model(tiny_grasp_model, tmp_path / "model")


@pytest.fixture
def local_node(monkeypatch, torch_single_thread):
    """make(**parameters): a PerceptionNode in this process, in a private rclpy context; all destroyed after."""
    if not INSTALL.is_dir():
        pytest.skip(f"{INSTALL} not built; run scripts/build_interfaces.sh (install.sh does)")
    env, namespace = isolated_ros_env()
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(name, env[name])
    import rclpy
    from rclpy.parameter import Parameter

    from vlkd_ros.ros.perception_node import PerceptionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**parameters) -> PerceptionNode:
        node = PerceptionNode(context=context, namespace=namespace,
                              parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if node._state == "active":
            node.trigger_deactivate()
        node.destroy_node()
    rclpy.try_shutdown(context=context)
