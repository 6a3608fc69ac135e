"""The floor of the service benchmark: a server of vlkd_perception's query services that answers without a model.

It serves ~/is_graspable and ~/query_objects (and an empty ~/list_objects) with the node's QoS, callback groups
and executor, keeps the latest camera frame like the node does, and publishes its frame counter on /diagnostics
the way the node does, so bench_ros_service.py measures it exactly like the node: whatever the node takes beyond
this server's figures is the node's own work (image conversion, model, bookkeeping). With --model-dir it judges a
request image with the model in the service callback (converted, embedded and answered there: no cache, no worker
thread, no lifecycle): the least any server that runs the model on a request image does, to set the node against.

    python benchmarks/floor_server.py --camera-topic /camera/image_raw --like-node --ros-args -r __ns:=/bench
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NODE_NAME = "vlkd_floor"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (everything after --ros-args goes to rclpy)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camera-topic", required=True, help="colour image topic to keep the latest frame of")
    p.add_argument("--executor", choices=("single", "multi"), default="single",
                   help="single: SingleThreadedExecutor (the node's); multi: a MultiThreadedExecutor")
    p.add_argument("--threads", type=int, default=6, help="executor threads for multi")
    p.add_argument("--like-node", action="store_true",
                   help="also create as many other services and guard conditions as the node has (lifecycle, "
                        "few-shot), idle: what the executor's per-call work costs with the node's entities")
    p.add_argument("--model-dir", help="judge request images with this grasp model in the callback (latest-frame "
                                       "calls still answer without it)")
    p.add_argument("--backend", default="onnx", help="the model's backend (with --model-dir)")
    p.add_argument("--inference-threads", type=int, default=1, help="the model's encoder threads (with --model-dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    args = parse_args(argv[:split])

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vlkd_interfaces.srv import IsGraspable, ListObjects, QueryObjects
    from vlkd_ros.ros.diagnostics import RateMeter
    from vlkd_ros.ros.image_msgs import image_to_rgb

    model = None
    if args.model_dir:
        from vlkd_ros.inference import GraspFeasibility

        model = GraspFeasibility.from_checkpoint(args.model_dir, backend=args.backend, threads=args.inference_threads)
    rclpy.init(args=["--ros-args", *argv[split + 1:]])
    node = rclpy.create_node(NODE_NAME)
    state = {"frame": None, "count": 0}
    meter = RateMeter()

    def on_image(msg: Image) -> None:
        state["frame"] = msg
        state["count"] += 1

    def stamp_of(image: Image):
        if image.width > 0 or image.height > 0 or len(image.data) > 0:
            return image.header.stamp
        frame = state["frame"]
        return frame.header.stamp if frame is not None else image.header.stamp

    def is_graspable(request, response):
        response.success, response.graspable, response.score = True, True, 0.5
        if model is not None and len(request.image.data) > 0:
            answer = model.query(image_to_rgb(request.image, shrink_to=model.image_size), [request.object_name])
            result = answer[0][request.object_name]
            response.graspable, response.score = result["graspable"], result["score"]
        response.frame_stamp, response.model_version, response.message = stamp_of(request.image), "floor", "floor"
        return response

    def query_objects(request, response):
        names = list(request.object_names)
        response.success, response.names = True, names
        response.scores, response.graspable = [0.5] * len(names), [True] * len(names)
        response.frame_stamp, response.model_version, response.message = stamp_of(request.image), "floor", "floor"
        return response

    def diagnostics() -> None:
        count = state["count"]
        status = DiagnosticStatus(name=f"{node.get_fully_qualified_name().lstrip('/')}: floor", message="ok")
        status.values = [KeyValue(key="frames_received", value=str(count)),
                         KeyValue(key="camera_rate_hz", value=f"{meter.rate(count):.2f}")]
        array = DiagnosticArray(status=[status])
        array.header.stamp = node.get_clock().now().to_msg()
        diag_pub.publish(array)

    queries = ReentrantCallbackGroup()
    camera, other = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
    request_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
    node.create_service(IsGraspable, "~/is_graspable", is_graspable, qos_profile=request_qos, callback_group=queries)
    node.create_service(QueryObjects, "~/query_objects", query_objects, qos_profile=request_qos,
                        callback_group=queries)
    node.create_service(ListObjects, "~/list_objects", lambda req, resp: resp, callback_group=other)
    node.create_subscription(Image, args.camera_topic, on_image,
                             QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                        reliability=ReliabilityPolicy.BEST_EFFORT), callback_group=camera)
    diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    node.create_timer(1.0, diagnostics, callback_group=other)
    if args.like_node:  # the node's other entities: lifecycle and few-shot services, a guard condition
        for i in range(11):
            node.create_service(ListObjects, f"~/idle_{i}", lambda req, resp: resp, callback_group=other)
        node.create_guard_condition(lambda: None, callback_group=other)
    if args.executor == "multi":
        executor = MultiThreadedExecutor(num_threads=args.threads)
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    print(f"{NODE_NAME}: serving with the {args.executor}-threaded executor", flush=True)
    started = time.monotonic()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(f"{NODE_NAME}: {state['count']} frames in {time.monotonic() - started:.1f} s", flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
