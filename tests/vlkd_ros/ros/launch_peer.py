"""Runs a launch file for real (needs ROS 2's launch and launch_ros) and prints one node's parameters as JSON.

Usage: python launch_peer.py LAUNCH_FILE ARGUMENTS_JSON NODE_FQN NAMES_JSON. Used by test_perception_launch.py on a
ROS 2 install; the parameters are read through the node's standard ~/get_parameters service.
"""
from __future__ import annotations

import json
import sys
import threading

import rclpy
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

DEADLINE_S = 60.0


def python_value(value) -> object:
    """A ParameterValue as a Python value."""
    return {
        ParameterType.PARAMETER_BOOL: lambda: value.bool_value,
        ParameterType.PARAMETER_INTEGER: lambda: value.integer_value,
        ParameterType.PARAMETER_DOUBLE: lambda: value.double_value,
        ParameterType.PARAMETER_STRING: lambda: value.string_value,
    }.get(value.type, lambda: None)()


def read_parameters(service: str, names: list[str], launch: LaunchService, out: dict) -> None:
    """Wait for the launched node, read its parameters into `out`, then stop the launch."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vlkd_launch_reader", context=context)
    try:
        client = node.create_client(GetParameters, f"{service}/get_parameters")
        if client.wait_for_service(timeout_sec=DEADLINE_S):
            future = client.call_async(GetParameters.Request(names=names))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            executor.spin_until_future_complete(future, timeout_sec=DEADLINE_S)
            if future.done():
                out.update(zip(names, (python_value(v) for v in future.result().values)))
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        launch.shutdown()


def main() -> int:
    """Launch, read, print; exit 3 when the parameters could not be read."""
    path, arguments, service, names = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    launch = LaunchService(argv=[])
    launch.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                                               launch_arguments=list(arguments.items())))
    values: dict = {}
    reader = threading.Thread(target=read_parameters, args=(service, names, launch, values), daemon=True)
    reader.start()
    launch.run()
    reader.join(timeout=5.0)
    if not values:
        print(f"could not read the parameters of {service}", file=sys.stderr)
        return 3
    print(json.dumps(values, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
