"""vlkd_interfaces over real DDS: a server process and a client process exchange IsGraspable calls."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ros_peers import INSTALL

PEER = Path(__file__).with_name("interfaces_peer.py")
TIMEOUT_S = 90

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not INSTALL.is_dir(),
                       reason=f"{INSTALL} not built; run scripts/build_interfaces.sh (install.sh does)"),
]


def _prepend(env: dict, name: str, path: Path) -> None:
    """Put path first on the os.pathsep-separated variable name in env."""
    env[name] = os.pathsep.join([str(path)] + ([env[name]] if env.get(name) else []))


def peer_env() -> dict:
    """Environment for a peer process: built interfaces on the paths, DDS kept on loopback."""
    env = dict(os.environ)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    _prepend(env, "PYTHONPATH", INSTALL / "lib" / pyver / "site-packages")
    _prepend(env, "LD_LIBRARY_PATH", INSTALL / "lib")
    _prepend(env, "AMENT_PREFIX_PATH", INSTALL)
    # Let the venv's ros_wheels_bootstrapper add its own library dirs in the child too.
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; the range below replaces it
    env.update(ROS_DOMAIN_ID=str(1 + os.getpid() % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_STATIC_PEERS="", RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1")
    return env


def expected_score() -> float:
    """Mean byte / 255 of the image interfaces_peer.make_image builds (byte i is i % 173)."""
    n = 3 * 64 * 48
    return sum(i % 173 for i in range(n)) / (255.0 * n)


def test_is_graspable_round_trip_between_processes() -> None:
    """A client process sends a 64x48 rgb8 image; the server process answers from its pixels and name."""
    names = ["mug", "plate"]
    env = peer_env()
    server = subprocess.Popen([sys.executable, str(PEER), "server", str(len(names))], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = subprocess.run([sys.executable, str(PEER), "client", *names], env=env,
                                capture_output=True, text=True, timeout=TIMEOUT_S)
        server_out, server_err = server.communicate(timeout=TIMEOUT_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert client.returncode == 0, f"client failed ({client.returncode}): {client.stderr}"
    assert server.returncode == 0, f"server failed ({server.returncode}): {server_err}"

    replies = [json.loads(line) for line in client.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in replies] == names
    for r in replies:
        assert r["success"] is True
        assert r["graspable"] is (r["name"] == "mug")
        assert r["score"] == pytest.approx(expected_score(), abs=1e-6)
        assert r["frame_stamp"] == [1234, 5678]
        assert r["message"] == "64x48 rgb8"
