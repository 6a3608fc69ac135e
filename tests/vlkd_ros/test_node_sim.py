"""The whole loop on one machine: `vlkd sim-camera` renders the ManiSkill clutter env -> `vlkd serve` -> answers."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ros_peers import VLKD
from test_node import drive, known_objects, serve_cmd

pytestmark = [
    pytest.mark.ros,
    pytest.mark.sim,
    pytest.mark.slow,  # ~40-70 s on 2 CPU cores: ManiSkill builds and settles the clutter scene first
    pytest.mark.skipif(importlib.util.find_spec("mani_skill") is None, reason="ManiSkill is not installed"),
]


def vulkan_available() -> bool:
    """Whether a Vulkan driver SAPIEN can use is installed (Mesa lavapipe or NVIDIA)."""
    from sim.backend import LAVAPIPE_ICD, NVIDIA_ICDS

    return LAVAPIPE_ICD.exists() or any(icd.exists() for icd in NVIDIA_ICDS)


def test_sim_camera_frames_are_judged_by_the_node(ros_env, procs, grasp_model_dir: Path, tmp_path: Path) -> None:
    """Rendered RGB-D clutter frames (with CameraInfo) reach the node, which answers about them."""
    if not vulkan_available():
        pytest.skip("no Vulkan driver for SAPIEN; ./install.sh installs Mesa lavapipe")
    env, ns = ros_env
    known = known_objects(grasp_model_dir)
    node = procs(serve_cmd(grasp_model_dir, ns, f"depth_topic:={ns}/camera/depth/image_raw",
                           f"camera_info_topic:={ns}/camera/camera_info"), env, "node")
    camera = [*VLKD, "sim-camera", "--source", "env", "--rate", "15", "--image-size", "128",
              "--topic", f"{ns}/camera/image_raw", "--depth-topic", f"{ns}/camera/depth/image_raw",
              "--camera-info-topic", f"{ns}/camera/camera_info"]
    c = drive("sim", env, {"node": f"{ns}/vlkd_perception", "known": [*known[:2], "soccer ball"],
                           "camera_cmd": camera})
    (tmp_path / "checks.json").write_text(json.dumps(c, indent=1))
    assert c["sim_answers"]["ok"], f"no answer about a sim frame: {c}\n{node.output()[-2000:]}"
    for name, answer in c["sim_answers"]["answers"].items():
        assert answer["success"], (name, answer)
        assert "128x128 rgb8" in answer["message"] and answer["stamp"][0] > 0
    assert "published" in c["camera_stopped"]["stderr_tail"]
    assert node.popen.poll() is None and node.stop() == 0
