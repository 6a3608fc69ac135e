"""Server and client processes for test_interfaces.py: one IsGraspable exchange over real DDS.

Run as `python interfaces_peer.py server N` (answers N calls, then exits) or
`python interfaces_peer.py client NAME...` (one call per NAME, prints each reply as a JSON line).
"""
import json
import sys
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image

from vlkd_interfaces.srv import IsGraspable

SERVICE = "vlkd_test/is_graspable"
WIDTH, HEIGHT = 64, 48
DEADLINE_S = 60.0


def make_image() -> Image:
    """Return the 64x48 rgb8 image the client sends: byte i is i % 173."""
    img = Image()
    img.header.stamp.sec, img.header.stamp.nanosec = 1234, 5678
    img.header.frame_id = "test_camera"
    img.width, img.height, img.encoding, img.step = WIDTH, HEIGHT, "rgb8", 3 * WIDTH
    img.data = bytes(i % 173 for i in range(3 * WIDTH * HEIGHT))
    return img


def answer(request: IsGraspable.Request, response: IsGraspable.Response) -> IsGraspable.Response:
    """Answer from the request alone: score = mean byte / 255, graspable = (name == "mug")."""
    data = bytes(request.image.data)
    response.success = len(data) > 0
    response.score = sum(data) / (255.0 * len(data)) if data else 0.0
    response.graspable = request.object_name == "mug"
    response.frame_stamp = request.image.header.stamp
    response.message = f"{request.image.width}x{request.image.height} {request.image.encoding}"
    return response


def serve(calls: int) -> int:
    """Serve `calls` IsGraspable requests, then exit 0; exit 2 if they do not all come in time."""
    node = Node("vlkd_test_server")
    served = []

    def callback(request, response):
        served.append(request.object_name)
        return answer(request, response)

    node.create_service(IsGraspable, SERVICE, callback)
    print("READY", flush=True)
    end = time.monotonic() + DEADLINE_S
    while len(served) < calls and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    # Give the last response time to leave before the participant goes away.
    stop = time.monotonic() + 0.5
    while time.monotonic() < stop:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    return 0 if len(served) >= calls else 2


def call(names: list) -> int:
    """Call IsGraspable once per name and print each reply as a JSON line; exit 3 on a timeout."""
    node = Node("vlkd_test_client")
    client = node.create_client(IsGraspable, SERVICE)
    if not client.wait_for_service(timeout_sec=DEADLINE_S / 2):
        print(f"service {SERVICE} not available after {DEADLINE_S / 2} s", file=sys.stderr)
        return 3
    for name in names:
        future = client.call_async(IsGraspable.Request(object_name=name, image=make_image()))
        rclpy.spin_until_future_complete(node, future, timeout_sec=DEADLINE_S / 2)
        if not future.done():
            print(f"no reply for {name!r} after {DEADLINE_S / 2} s", file=sys.stderr)
            return 3
        r = future.result()
        print(json.dumps({
            "name": name, "success": r.success, "graspable": r.graspable, "score": r.score,
            "frame_stamp": [r.frame_stamp.sec, r.frame_stamp.nanosec], "message": r.message,
        }), flush=True)
    node.destroy_node()
    return 0


def main() -> int:
    """Dispatch on argv: `server N` or `client NAME...`."""
    role, args = sys.argv[1], sys.argv[2:]
    rclpy.init()
    try:
        return serve(int(args[0])) if role == "server" else call(args)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
