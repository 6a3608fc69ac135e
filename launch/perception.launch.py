"""Starts the vlkd_perception grasp-feasibility node as a lifecycle node with config/perception.yaml.

    ros2 launch vlkd_ros perception.launch.py camera_topic:=/camera/color/image_raw   # the shipped default model
    ros2 launch vlkd_ros perception.launch.py model_dir:=/path/to/model state_dir:=/var/lib/vlkd/state
    ros2 launch vlkd_ros perception.launch.py model_dir:=/path/to/model autostart:=false   # a lifecycle manager
                                                                                          # configures/activates it

Valid for ROS 2 Kilted and Jazzy (launch_ros.actions.LifecycleNode with name and namespace, as both require).
With autostart:=true (the default) the node configures and activates itself at start; with autostart:=false it
stays unconfigured until a lifecycle manager (nav2_lifecycle_manager, `ros2 lifecycle set`) drives it.

Without ROS 2's launch tools, `vlkd serve --params config/perception.yaml --camera-topic ... --model-dir ...`
starts the same node with the same parameters (tests/vlkd_ros/ros/test_perception_launch.py checks that they agree).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

PACKAGE = "vlkd_ros"
EXECUTABLE = "vlkd_perception"
NODE_NAME = "vlkd_perception"
# launch argument -> node parameter it overrides; an empty argument keeps the params file's value.
OVERRIDES = {"camera_topic": "image_topic", "model_dir": "model_dir", "state_dir": "state_dir", "device": "device"}
# boolean launch argument ("true" or "false", its declared choices) -> node parameter it always sets.
FLAGS = {"autostart": "autostart"}


def _node(context, *args, **kwargs):
    """The lifecycle node action, with the non-empty launch arguments as parameter overrides after the params file."""
    overrides = {}
    for argument, parameter in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context)
        if value:
            overrides[parameter] = value
    for argument, parameter in FLAGS.items():
        overrides[parameter] = LaunchConfiguration(argument).perform(context) == "true"
    return [LifecycleNode(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
                          namespace=LaunchConfiguration("namespace"),
                          parameters=[LaunchConfiguration("params_file"), overrides],
                          output="screen", emulate_tty=True)]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments params_file, camera_topic, model_dir, state_dir, device, autostart, namespace; one lifecycle
    node."""
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "perception.yaml"]),
            description="ROS 2 params file for the node"),
        DeclareLaunchArgument("camera_topic", default_value="",
                              description="colour image topic (empty: image_topic from params_file)"),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="grasp model dir (empty: model_dir from params_file; empty there too: "
                                          "the shipped default model)"),
        DeclareLaunchArgument("state_dir", default_value="",
                              description="writable dir for what add_object learns (empty: state_dir from "
                                          "params_file)"),
        DeclareLaunchArgument("device", default_value="", description="torch device (empty: from params_file)"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="configure and activate at start; false: a lifecycle manager drives it"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        OpaqueFunction(function=_node),
    ])
