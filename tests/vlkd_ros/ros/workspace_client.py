"""Client process for test_colcon_workspace.py, run in a shell that sourced a colcon workspace's install/local_setup.bash:
reports where vlkd_ros and vlkd_interfaces come from, drives the node's lifecycle like a lifecycle manager when asked,
and asks IsGraspable about a request image.

Usage: python workspace_client.py CONFIG_JSON, CONFIG_JSON: {"node": "/ns/vlkd_perception", "name": "red circle",
"manage": false}. Prints one JSON line per check ({"check": ..., ...}).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

WAIT_S = 90.0


def emit(check: str, **fields) -> None:
    """Print one result line."""
    print(json.dumps({"check": check, **fields}), flush=True)


def where() -> dict:
    """Files and ament index entries the sourced workspace resolves to."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    import vlkd_interfaces
    import vlkd_ros
    return {"vlkd_ros": vlkd_ros.__file__, "vlkd_interfaces": vlkd_interfaces.__file__,
            "prefix": get_package_prefix("vlkd_ros"), "share": get_package_share_directory("vlkd_ros"),
            "interfaces_prefix": get_package_prefix("vlkd_interfaces")}


def main() -> int:
    """Report, wait for the node, optionally configure + activate it, ask once."""
    cfg = json.loads(sys.argv[1])
    emit("where", **where())
    from vlkd_ros.ros.client import PerceptionClient
    from vlkd_ros.ros.image_msgs import numpy_to_image

    rclpy.init()
    client = PerceptionClient(cfg["node"], "vlkd_workspace_client")
    try:
        get_state = client.node.create_client(GetState, f"{cfg['node']}/get_state")
        change = client.node.create_client(ChangeState, f"{cfg['node']}/change_state")
        ok = client.wait_for_services(WAIT_S, (get_state, change))
        emit("services", ok=ok)
        if not ok:
            return 3

        def state() -> str:
            reply = client.call(get_state, GetState.Request())
            return reply.current_state.label if reply else "timeout"

        if cfg.get("manage"):
            emit("before_manager", state=state())
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                request = ChangeState.Request()
                request.transition.id = transition
                reply = client.call(change, request, timeout=60.0)
                emit(f"transition_{transition}", ok=bool(reply and reply.success))
        end = time.monotonic() + WAIT_S
        while (current := state()) != "active" and time.monotonic() < end:
            time.sleep(0.2)
        emit("state", state=current)
        rgb = (np.arange(48 * 48 * 3) % 251).astype(np.uint8).reshape(48, 48, 3)
        reply = client.ask(cfg["name"], numpy_to_image(rgb, "rgb8"))
        emit("is_graspable", answered=reply is not None, **({} if reply is None else {
            "success": reply.success, "graspable": reply.graspable, "score": reply.score, "message": reply.message}))
        return 0
    finally:
        client.close()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
