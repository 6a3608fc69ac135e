"""launch/perception.launch.py and `vlkd serve` give the vlkd_perception node the same parameters.

Without ROS 2's `launch` package the launch file is read as a syntax tree (never executed): that it starts the
node as a `launch_ros.actions.LifecycleNode` (package, executable, name, namespace, parameters: the keywords both
Kilted and Jazzy take), its arguments and defaults (autostart among them), that every argument overriding a
parameter names a real node parameter, and its package, executable and node name against setup.py and the node;
the parameters it would give are compared with what the node reports under `vlkd serve --print-params`.
Where `launch_ros` is importable (a regular ROS 2 install), the launch file is also run for real.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ros_peers import INSTALL, ROOT, VLKD

LAUNCH = ROOT / "launch" / "perception.launch.py"
PARAMS = ROOT / "config" / "perception.yaml"
NODE_MODULE = ROOT / "vlkd_ros" / "ros" / "perception_node.py"
LAUNCH_PEER = Path(__file__).with_name("launch_peer.py")
TIMEOUT_S = 60

pytestmark = pytest.mark.ros


def module_constants(path: Path) -> dict:
    """Module-level `NAME = <literal>` assignments of a Python file, without importing it."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of the function or class `name` in the tree."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def evaluate(node: ast.AST, constants: dict) -> object:
    """Value of the few launch expressions the file uses, with substitutions written as `$(argument)`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id, f"<{node.id}>")
    if isinstance(node, ast.List):
        return [evaluate(e, constants) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [evaluate(a, constants) for a in node.args]
        if node.func.id == "LaunchConfiguration":
            return f"$({args[0]})"
        if node.func.id == "FindPackageShare":
            return f"share/{args[0]}"
        if node.func.id == "PathJoinSubstitution":
            return "/".join(args[0])
    raise AssertionError(f"launch file line {node.lineno}: expression {ast.unparse(node)!r} is not understood "
                         "by this test's reader; extend evaluate() or keep the launch file declarative")


def launch_spec() -> dict:
    """What the launch file declares: constants, arguments with defaults, and the node action's keywords."""
    tree = ast.parse(LAUNCH.read_text())
    constants = module_constants(LAUNCH)
    arguments, choices = {}, {}
    for call in calls(tree, "DeclareLaunchArgument"):
        kw = {k.arg: evaluate(k.value, constants) for k in call.keywords if k.arg in ("default_value", "choices")}
        name = evaluate(call.args[0], constants)
        arguments[name] = kw.get("default_value")
        if "choices" in kw:
            choices[name] = kw["choices"]
    (node,) = calls(tree, "LifecycleNode")
    keywords = {k.arg: evaluate(k.value, constants) for k in node.keywords}
    loops = [ast.unparse(n.iter) for n in ast.walk(tree) if isinstance(n, ast.For)]
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return {"constants": constants, "arguments": arguments, "choices": choices, "node": keywords, "loops": loops,
            "imports": imports, "plain_nodes": len(calls(tree, "Node"))}


def console_scripts() -> dict:
    """console_scripts of setup.py as {name: target}."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    (setup,) = calls(tree, "setup")
    entry = next(k.value for k in setup.keywords if k.arg == "entry_points")
    scripts = ast.literal_eval(entry)["console_scripts"]
    return dict(s.replace(" ", "").split("=") for s in scripts)


def params_file_values(path: Path = PARAMS) -> dict:
    """The vlkd_perception parameters in a params file (key /**/vlkd_perception or vlkd_perception)."""
    data = yaml.safe_load(path.read_text())
    node_name = module_constants(NODE_MODULE)["NODE_NAME"]
    keys = [k for k in data if k.rsplit("/", 1)[-1] == node_name]
    assert len(keys) == 1, f"{path} must have one section for node {node_name}, has {list(data)}"
    return data[keys[0]]["ros__parameters"]


def launch_parameters(arguments: dict) -> dict:
    """Parameters the launch file gives the node: the params file, then the non-empty override arguments and the
    boolean arguments (their defaults where not given)."""
    spec = launch_spec()
    overrides, flags = spec["constants"]["OVERRIDES"], spec["constants"]["FLAGS"]
    values = dict(params_file_values())
    values.update({overrides[a]: v for a, v in arguments.items() if v and a in overrides})
    values.update({p: arguments.get(a, spec["arguments"][a]) == "true" for a, p in flags.items()})
    return values


def serve_parameters(env: dict, arguments: dict) -> dict:
    """The node's parameters as `vlkd serve --print-params` reports them, with the same overrides as flags (the
    launch file's boolean arguments, which `vlkd serve` has no flag for, as `--ros-args -p NAME:=VALUE`)."""
    launch_flags = launch_spec()["constants"]["FLAGS"]
    flags = [x for a, v in arguments.items() if v and a not in launch_flags for x in (f"--{a.replace('_', '-')}", v)]
    ros_params = [x for a, v in arguments.items() if a in launch_flags for x in ("-p", f"{launch_flags[a]}:={v}")]
    flags += ["--print-params", *(["--ros-args", *ros_params] if ros_params else [])]
    proc = subprocess.run([*VLKD, "serve", "--params", str(PARAMS), *flags], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, f"vlkd serve failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_launch_file_names_the_installed_node_and_params_file() -> None:
    """Package, executable, node name, arguments and the parameter list agree with setup.py, the node and CLI."""
    from vlkd_ros.cli.serve import OVERRIDES as SERVE_OVERRIDES

    spec = launch_spec()
    consts, node = spec["constants"], spec["node"]
    assert node["package"] == consts["PACKAGE"] == "vlkd_ros"
    assert console_scripts()[node["executable"]] == "vlkd_ros.ros.perception_node:main"
    assert node["name"] == module_constants(NODE_MODULE)["NODE_NAME"]
    assert node["parameters"] == ["$(params_file)", "<overrides>"]
    assert "OVERRIDES.items()" in spec["loops"] and "FLAGS.items()" in spec["loops"]
    assert consts["OVERRIDES"] == SERVE_OVERRIDES
    assert spec["arguments"] == {"params_file": "share/vlkd_ros/config/perception.yaml", "namespace": "",
                                 "autostart": "true", **{a: "" for a in consts["OVERRIDES"]}}
    setup_text = (ROOT / "setup.py").read_text()
    assert 'f"share/{PACKAGE}/config", glob("config/*.yaml")' in setup_text
    assert 'f"share/{PACKAGE}/launch", glob("launch/*.launch.py")' in setup_text
    assert (ROOT / "resource" / "vlkd_ros").is_file()
    assert (ROOT / "setup.cfg").read_text().count("$base/lib/vlkd_ros") == 2, "ros2 run/launch look in lib/vlkd_ros"


def test_launch_file_starts_a_lifecycle_node_with_autostart() -> None:
    """A launch_ros.actions.LifecycleNode with the keywords both Kilted and Jazzy take (name and namespace are
    required there), an autostart argument (true by default, false for a lifecycle manager), and every argument
    that overrides a node parameter names a real one of vlkd_ros.ros.parameters.PARAMETERS."""
    from vlkd_ros.ros.parameters import SPECS

    spec = launch_spec()
    consts, node = spec["constants"], spec["node"]
    assert ("launch_ros.actions", "LifecycleNode") in spec["imports"]
    assert ("launch_ros.actions", "Node") not in spec["imports"] and spec["plain_nodes"] == 0
    assert {"package", "executable", "name", "namespace", "parameters"} <= set(node), sorted(node)
    assert node["namespace"] == "$(namespace)"
    assert "autostart" not in node, "the node configures itself (its autostart parameter); launch must not too"
    overriding = {**consts["OVERRIDES"], **consts["FLAGS"]}
    assert set(overriding) <= set(spec["arguments"]), "every overriding argument is declared"
    unknown = {a: p for a, p in overriding.items() if p not in SPECS}
    assert not unknown, f"launch arguments override parameters the node does not declare: {unknown}"
    assert not set(consts["OVERRIDES"]) & set(consts["FLAGS"])
    for argument, parameter in consts["FLAGS"].items():
        assert isinstance(SPECS[parameter].default, bool), f"{argument} sets a non-boolean parameter {parameter}"
        assert spec["choices"][argument] == ["true", "false"]
        assert spec["arguments"][argument] == str(SPECS[parameter].default).lower()
    assert consts["FLAGS"] == {"autostart": "autostart"} and SPECS["autostart"].default is True
    assert params_file_values()["autostart"] is True
    # The rest of the declared arguments are the launch file's own: which params file, and where the node lives.
    assert set(spec["arguments"]) - set(overriding) == {"params_file", "namespace"}


@pytest.mark.parametrize("arguments", [
    {},
    {"camera_topic": "/robot/head_camera/color/image_raw", "model_dir": "/models/grasp", "device": "cuda:1"},
    {"autostart": "false"},
], ids=["defaults", "overrides", "lifecycle_manager"])
def test_serve_gives_the_node_the_launch_parameters(ros_env, arguments: dict) -> None:
    """The parameters the launch file would give equal those the node reports under `vlkd serve`."""
    env, _ = ros_env
    reported = serve_parameters(env, arguments)
    expected = launch_parameters(arguments)
    unknown = sorted(set(params_file_values()) - set(reported))
    assert not unknown, f"{PARAMS} sets parameters the node does not declare (rclpy ignores them): {unknown}"
    assert {k: reported[k] for k in expected} == expected


def test_serve_reexecs_with_the_interfaces_on_the_library_path(ros_env) -> None:
    """Without `source scripts/env.sh`, `vlkd serve` puts install/vlkd_interfaces on the paths and re-execs."""
    env, _ = ros_env
    for name in ("LD_LIBRARY_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH"):
        kept = [p for p in env.get(name, "").split(os.pathsep) if p and not p.startswith(str(INSTALL))]
        env[name] = os.pathsep.join(kept)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]]).rstrip(os.pathsep)
    assert serve_parameters(env, {"model_dir": "/m"})["model_dir"] == "/m"


def test_serve_refuses_bad_parameter_values(ros_env, tmp_path: Path) -> None:
    """An out-of-range or unknown-choice value stops `vlkd serve` with one line naming it."""
    env, _ = ros_env
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/**/vlkd_perception": {"ros__parameters": {"image_reliability": "sometimes"}}}))
    proc = subprocess.run([*VLKD, "serve", "--params", str(bad), "--print-params"], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 2
    assert "image_reliability='sometimes' is not valid; valid: best_effort, reliable" in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable from PyPI; runs on a ROS 2 install")
def test_launch_file_runs_the_node_with_the_serve_parameters(ros_env) -> None:
    """On a ROS 2 install with vlkd_ros built: launch for real, read the node's parameters, compare."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("vlkd_ros")
    except PackageNotFoundError:
        pytest.skip("vlkd_ros is not in the ament index: colcon build it and source the workspace")
    env, namespace = ros_env
    arguments = {"camera_topic": "/robot/camera/image_raw", "model_dir": "/models/grasp", "autostart": "false"}
    names = sorted(serve_parameters(env, {}))
    proc = subprocess.run([sys.executable, str(LAUNCH_PEER), str(LAUNCH),
                           json.dumps({**arguments, "namespace": namespace}), f"{namespace}/vlkd_perception",
                           json.dumps(names)], env=env, capture_output=True, text=True, timeout=TIMEOUT_S * 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launched = json.loads(proc.stdout.strip().splitlines()[-1])
    assert launched == serve_parameters(env, arguments)
