"""`vlkd serve` (the perception node with the launch file's parameters), `vlkd sim-camera` (a camera publisher) and
`vlkd ask` (a client of a running node)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlkd_formats.config import load_config
from vlkd_ros.cli import CLIError
from vlkd_ros.cli.flags import add_config_flags, flag_overrides

CHECKOUT = Path(__file__).resolve().parents[2]
# The ROS 2 distros this checkout is tested with; the first is the default (.venv, install/). Each other one has its
# own venv and colcon install base (./install.sh --ros jazzy: .venv-jazzy, install-jazzy/).
ROS_DISTROS = ("kilted", "jazzy")


def ros_distro() -> str:
    """The ROS 2 distro of this interpreter: the one whose rclpy wheel is installed, else $ROS_DISTRO (a regular
    ROS 2 install sets it), else the default."""
    from importlib import metadata

    for distro in ROS_DISTROS:
        try:
            metadata.distribution(f"ros-{distro}-rclpy")
            return distro
        except metadata.PackageNotFoundError:
            pass
    return os.environ.get("ROS_DISTRO") or ROS_DISTROS[0]


def interfaces_install(distro: str) -> Path:
    """Where scripts/build_interfaces.sh installs vlkd_interfaces for `distro`."""
    return CHECKOUT / ("install" if distro == ROS_DISTROS[0] else f"install-{distro}") / "vlkd_interfaces"


INTERFACES = interfaces_install(ros_distro())
REEXEC_GUARD = "_VLKD_ROS_ENV_REEXEC"
FASTDDS_PROFILE = "fastdds_large_frames.xml"
# `vlkd serve` flag -> node parameter; the same pairs as the launch arguments of launch/perception.launch.py.
OVERRIDES = {"camera_topic": "image_topic", "model_dir": "model_dir", "state_dir": "state_dir", "device": "device"}
# `vlkd sim-camera` flags: SimCameraConfig fields (`--depth-topic` sets depth_topic), with their help texts.
SIM_CAMERA_FLAGS = ("source", "env_id", "images", "topic", "depth_topic", "camera_info_topic", "hand_topic",
                    "hand_depth_topic", "rate", "image_size", "camera", "seed", "scene_period", "sway", "sim_backend",
                    "reliability", "frames")
SIM_CAMERA_HELP = {
    "source": "env: render scenes of the clutter env; images: cycle over recorded frames",
    "env_id": "ManiSkill env id for --source env",
    "images": "for --source images: a folder of .png/.jpg files, or of recorded clutter episodes "
              "(<episode>/base_rgb.png, base_depth.png, hand_rgb.png, hand_depth.png) to replay every view",
    "topic": "colour image topic (rgb8)",
    "depth_topic": "also publish depth (16UC1, mm) here",
    "camera_info_topic": "also publish sensor_msgs/CameraInfo here",
    "hand_topic": "also publish the wrist camera's colour frames here (env)",
    "hand_depth_topic": "also publish the wrist camera's depth here (env)",
    "rate": "frames per second",
    "image_size": "square frame side in pixels",
    "camera": "env camera to publish (default: its first)",
    "seed": "first scene seed",
    "scene_period": "seconds between new scenes (0: one scene)",
    "sway": "env: the camera sways over the scene by this fraction of the frame side (one slow circle every 4 s), so "
            "successive frames are distinct views as from a moving camera (take_next_frames needs them); 0: still",
    "frames": "stop after this many frames (0: run until Ctrl-C)",
}


COMMANDS = ("serve", "sim-camera", "ask")  # the subcommands `register` adds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the serve, sim-camera and ask subcommands."""
    p = sub.add_parser("serve", help="run the vlkd_perception ROS 2 node (what perception.launch.py starts)",
                       description="Start the grasp-feasibility node with a ROS 2 params file, exactly as "
                                   "`ros2 launch vlkd_ros perception.launch.py` does. It ends with a one-line "
                                   "error and exit status 2 when a node of its name already runs in the ROS "
                                   "domain, or (with autostart, the default) when the model dir does not load. "
                                   "Example: vlkd serve --params config/perception.yaml --model-dir "
                                   "runs/grasp/model")
    p.add_argument("--params", default=None, help=f"ROS 2 params file (default {default_params_file()})")
    p.add_argument("--camera-topic", default="", help="override image_topic (launch argument camera_topic)")
    p.add_argument("--model-dir", default="", help="override model_dir (launch argument model_dir; neither set: the "
                                                   "shipped default model)")
    p.add_argument("--state-dir", default="", help="override state_dir (launch argument state_dir): where ~/add_object "
                                                   "writes, never into the model dir")
    p.add_argument("--device", default="", help="override device (launch argument device)")
    p.add_argument("--print-params", action="store_true",
                   help="print the node's parameters as JSON and exit without loading the model")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="last option: everything after it goes to rclpy, e.g. --ros-args -p threshold:=0.6")
    p.set_defaults(func=run_serve)

    from vlkd_ros.ros.sim_camera_config import RELIABILITY_NAMES, SOURCES, SimCameraConfig

    c = sub.add_parser("sim-camera", help="publish camera frames from the ManiSkill clutter env (or an image folder)",
                       description="Stream frames to a sensor_msgs/Image topic so the perception node can be "
                                   "tried on one machine. Example: vlkd sim-camera --rate 30 --depth-topic "
                                   "/camera/depth/image_raw")
    c.add_argument("--config", help="YAML file of SimCameraConfig settings (flags given here override it)")
    add_config_flags(c, SimCameraConfig, SIM_CAMERA_FLAGS, help=SIM_CAMERA_HELP,
                     choices={"source": SOURCES, "sim_backend": ("cpu", "gpu"), "reliability": RELIABILITY_NAMES})
    c.set_defaults(func=run_sim_camera)

    q = sub.add_parser("ask", help="ask a running vlkd_perception node whether objects are graspable",
                       description="Judge the named objects (none: every object the node knows) on the node's "
                                   "latest camera frame; prints one line per name, with the pixel and box where the "
                                   "model sees it when the model gives one. Example: vlkd ask mug 'tea cup'")
    q.add_argument("names", nargs="*", help="object names (none: every known object)")
    q.add_argument("--node", default="/vlkd_perception", help="the node's fully qualified name")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node and its answer")
    q.set_defaults(func=run_ask)


def default_params_file() -> Path:
    """config/perception.yaml of this checkout, else the installed package's share/vlkd_ros/config copy."""
    local = CHECKOUT / "config" / "perception.yaml"
    if local.is_file():
        return local
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("vlkd_ros")) / "config" / "perception.yaml"
    except Exception:  # noqa: BLE001 - no ament index: report the checkout path in the error
        return local


def ensure_ros_environment() -> None:
    """Re-exec once with this checkout's built vlkd_interfaces on the library paths if they are missing.

    The interface type-support libraries are found through LD_LIBRARY_PATH, which the dynamic loader reads
    only when a process starts; `source scripts/env.sh` sets it, and so does this re-exec.
    """
    if not INTERFACES.is_dir():
        return
    lib = str(INTERFACES / "lib")
    if lib in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        return
    if os.environ.get(REEXEC_GUARD):
        raise CLIError(f"{lib} is still not on LD_LIBRARY_PATH after re-exec; run `source scripts/env.sh` first")
    env = dict(os.environ)
    site = INTERFACES / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name, path in (("PYTHONPATH", site), ("LD_LIBRARY_PATH", lib), ("AMENT_PREFIX_PATH", INTERFACES)):
        env[name] = os.pathsep.join([str(path)] + ([env[name]] if env.get(name) else []))
    env[REEXEC_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)


def use_large_frame_profile() -> None:
    """Point Fast DDS at config/fastdds_large_frames.xml (bigger shared-memory segment) unless a profile is set.

    With Fast DDS's default 512 KiB segment, best-effort camera frames larger than that are dropped on one host.
    """
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return
    profile = default_params_file().with_name(FASTDDS_PROFILE)
    if profile.is_file():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)


def node_ros_args(params: Path, extra: list[str]) -> list[str]:
    """rclpy arguments: the params file, then whatever the user put after --ros-args."""
    if not params.is_file():
        raise CLIError(f"params file {params} not found (give one with --params)")
    return ["--ros-args", "--params-file", str(params), *extra]


def run_serve(args: argparse.Namespace) -> int:
    """Start the node with the params file and flag overrides (its StartError: exit 2, one line); or print its
    parameters and exit."""
    ensure_ros_environment()
    import rclpy
    from rclpy.parameter import Parameter

    from vlkd_ros.ros.perception_node import PerceptionNode, run

    params = Path(args.params) if args.params else default_params_file()
    use_large_frame_profile()
    try:
        rclpy.init(args=["vlkd serve", *node_ros_args(params, args.ros_args)])
    except RuntimeError as err:  # rclpy's argument errors (UnknownROSArgsError, ...): one line for the user
        raise CLIError(f"rclpy refuses the params file {params} or the arguments after --ros-args "
                       f"{' '.join(args.ros_args)!r}: {type(err).__name__}: {err} (vlkd serve's own flags go before "
                       "--ros-args)") from err
    try:
        overrides = [Parameter(param, value=getattr(args, flag)) for flag, param in OVERRIDES.items()
                     if getattr(args, flag)]
        try:
            node = PerceptionNode(parameter_overrides=overrides)
        except Exception as err:  # noqa: BLE001 - rclpy's parameter errors: one line for the user
            raise CLIError(f"bad parameters in {params} or the overrides: {type(err).__name__}: {err}") from err
        if args.print_params:
            print(json.dumps(node.parameter_values(), sort_keys=True))
            node.destroy_node()
            return 0
        return run(node)
    finally:
        rclpy.try_shutdown()


def run_ask(args: argparse.Namespace) -> int:
    """Print the node's answers for the names (exit 1 when it could not answer)."""
    ensure_ros_environment()
    import rclpy

    from vlkd_ros.ros.client import PerceptionClient, answer_lines

    rclpy.init(args=["vlkd ask"])
    client = PerceptionClient(args.node, "vlkd_ask")
    try:
        if not client.objects.wait_for_service(timeout_sec=args.timeout):
            raise CLIError(f"no node answers {args.node}/query_objects within {args.timeout:g} s: is it running "
                           "(vlkd serve), under that name and ROS_DOMAIN_ID?")
        reply = client.ask_many(args.names, timeout=args.timeout)
        if reply is None:
            raise CLIError(f"{args.node}/query_objects did not answer within {args.timeout:g} s")
        print("\n".join(answer_lines(reply)))
        return 0 if reply.success else 1
    finally:
        client.close()
        rclpy.try_shutdown()


def run_sim_camera(args: argparse.Namespace) -> int:
    """Publish frames until Ctrl-C or --frames."""
    ensure_ros_environment()
    import rclpy

    from vlkd_ros.ros.sim_camera import run
    from vlkd_ros.ros.sim_camera_config import SimCameraConfig

    config = load_config(SimCameraConfig, args.config, flag_overrides(args, SimCameraConfig))
    use_large_frame_profile()
    rclpy.init(args=["vlkd sim-camera"])
    try:
        return run(config)
    except RuntimeError as err:  # SAPIEN/Vulkan and missing-asset errors carry what to do
        raise CLIError(str(err)) from err
    finally:
        rclpy.try_shutdown()
