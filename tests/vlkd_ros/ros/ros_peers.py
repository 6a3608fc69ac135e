"""Helpers for the ROS node tests: an isolated DDS environment and peer processes stopped with Ctrl-C."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from vlkd_ros.cli.serve import INTERFACES, ros_distro

ROOT = Path(__file__).resolve().parents[3]
# This interpreter's distro and the vlkd_interfaces build for it (install/ for Kilted, install-jazzy/ for Jazzy).
DISTRO = ros_distro()
INSTALL = INTERFACES
# The `vlkd` console script of this interpreter's environment (what users run), else the same entry point.
_SCRIPT = Path(sys.executable).with_name("vlkd")
VLKD = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-c",
                                                 "import sys; from vlkd_ros.cli import main; sys.exit(main())"]
_COUNTER = itertools.count()


def _prepend(env: dict, name: str, path: Path) -> None:
    """Put path first on the os.pathsep-separated variable name in env."""
    env[name] = os.pathsep.join([str(path)] + ([env[name]] if env.get(name) else []))


def isolated_ros_env() -> tuple[dict, str]:
    """(environment, namespace) for peer processes: interfaces on the paths, a domain id and namespace of their own.

    Other workers on this machine run DDS tests too: a domain id alone (100 choices) can collide, so every
    test also puts its nodes and topics under a namespace nobody else uses.
    """
    n = next(_COUNTER)
    env = dict(os.environ)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    _prepend(env, "PYTHONPATH", INSTALL / "lib" / pyver / "site-packages")
    _prepend(env, "LD_LIBRARY_PATH", INSTALL / "lib")
    _prepend(env, "AMENT_PREFIX_PATH", INSTALL)
    _prepend(env, "PYTHONPATH", ROOT)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let the wheels' bootstrapper set up the child too
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.update(ROS_DOMAIN_ID=str(1 + (os.getpid() + 37 * n) % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_STATIC_PEERS="", RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1",
               RCUTILS_COLORIZED_OUTPUT="0", PYTHONFAULTHANDLER="1")  # a crash prints every thread's stack
    return env, f"/vlkd_t{os.getpid()}_{n}"


class Proc:
    """A peer process whose output goes to files, stopped with Ctrl-C (SIGINT) like a user would."""

    def __init__(self, cmd: list[str], env: dict, log_dir: Path, name: str) -> None:
        self.name = name
        self.out_path, self.err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.popen = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=self._err, text=True, cwd=ROOT)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, then kill after `timeout`; return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        self._err.close()
        return self.popen.returncode

    def output(self) -> str:
        """stdout + stderr so far."""
        return self.out_path.read_text() + self.err_path.read_text()


def parse_checks(stdout: str) -> dict:
    """The {"check": name, ...} JSON lines a driver printed, as {name: fields}."""
    checks = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            checks[row.pop("check")] = row
    return checks


def finish(result, timeout: float = 60.0):
    """A callback's return value; a coroutine (an async service callback) is driven to its end the way rclpy's Task
    drives it, resumed until done while its model worker runs (no executor spins here)."""
    import inspect
    import time

    if not inspect.iscoroutine(result):
        return result
    end = time.monotonic() + timeout
    while True:
        try:
            result.send(None)
        except StopIteration as done:
            return done.value
        if time.monotonic() > end:
            result.close()
            raise TimeoutError(f"the callback did not finish in {timeout} s")
        time.sleep(0.001)
