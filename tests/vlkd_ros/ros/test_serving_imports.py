"""A running perception node (backend "onnx", the node's default) imports neither torch nor `training` nor `sim`, nor
OpenCV or scipy (Pillow shrinks its frames; scipy comes with the first few-shot job): checked inside the node
process, after it answered a client's question about a trained and a new name; started as `vlkd_perception` (what
`ros2 run` and launch files execute) and as `vlkd serve`."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_peers import VLKD
from test_perception_node import PARAMS, camera_cmd, serve_cmd

pytestmark = pytest.mark.ros
TRAINER = ("torch", "training", "sim")
HEAVY = ("cv2", "scipy")  # ~50 and ~58 MB of a node's memory (cv2 comes for ~/debug_image, scipy for a job's fit)

# `vlkd serve` with a watcher thread: once the trigger file appears it writes the trainer modules the process holds
WRAPPER = """
import json, os, sys, threading, time
trigger, out = sys.argv[1], sys.argv[2]
def watch():
    while not os.path.exists(trigger):
        time.sleep(0.05)
    held = sorted(m for m in sys.modules if m.split(".")[0] in {trainer})
    with open(out + ".tmp", "w") as f:
        json.dump(held, f)
    os.replace(out + ".tmp", out)
threading.Thread(target=watch, daemon=True).start()
if sys.argv[3] == "vlkd_perception":
    from vlkd_ros.ros.perception_node import main
    sys.exit(main(sys.argv[3:]))
from vlkd_ros.cli import main
sys.argv = ["vlkd", *sys.argv[4:]]
sys.exit(main())
""".format(trainer=repr({*TRAINER, *HEAVY}))


def node_args(entry: str, model_dir: Path, ns: str) -> list[str]:
    """The node's command line after the wrapper's arguments."""
    if entry == "vlkd serve":
        return ["vlkd serve", *serve_cmd(model_dir, ns)[len(VLKD):]]
    return ["vlkd_perception", "--ros-args", "--params-file", str(PARAMS), "-r", f"__ns:={ns}",
            "-p", f"model_dir:={model_dir}", "-p", f"image_topic:={ns}/camera/image_raw", "-p", "results_rate:=2.0"]


@pytest.mark.parametrize("entry", ["vlkd_perception", "vlkd serve"])
def test_a_serving_node_holds_no_trainer_module(entry, ros_env, procs, grasp_model_dir: Path, camera_images: Path,
                                                 tmp_path: Path) -> None:
    env, ns = ros_env
    trigger, out = tmp_path / "dump", tmp_path / "modules.json"
    node = procs([sys.executable, "-c", WRAPPER, str(trigger), str(out), *node_args(entry, grasp_model_dir, ns)],
                 env, "node")
    procs(camera_cmd(camera_images, ns), env, "camera")
    deadline, answer = time.monotonic() + 120, None
    while time.monotonic() < deadline:  # the node answers once it is active and has a frame
        answer = subprocess.run([*VLKD, "ask", "red circle", "teapot", "--node", f"{ns}/vlkd_perception",
                                 "--timeout", "10"], env=env, capture_output=True, text=True, timeout=60)
        if answer.returncode == 0:
            break
        assert node.popen.poll() is None, node.output()[-3000:]
    assert answer is not None and answer.returncode == 0, answer.stdout + answer.stderr + node.output()[-3000:]
    assert "red circle" in answer.stdout and "teapot" in answer.stdout
    trigger.write_text("")
    while not out.exists():
        assert time.monotonic() < deadline + 30, node.output()[-3000:]
        time.sleep(0.1)
    assert json.loads(out.read_text()) == []
