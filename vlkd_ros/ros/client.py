"""Python client of a running `vlkd_perception` node: its services over DDS and its /diagnostics, spun on a
background executor thread so calls can block from the caller's thread.

    rclpy.init()
    client = PerceptionClient("/vlkd_perception")
    client.wait_for_services(30.0)
    reply = client.ask("coffee mug")          # IsGraspable.Response, or None on timeout
    many = client.ask_many(["mug", "plate"])  # QueryObjects.Response: every name judged on one frame
    print("\n".join(answer_lines(many)))     # one line per name, with where the model sees it when it says
    client.close(); rclpy.shutdown()
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vlkd_interfaces.srv import AddObject, GetJobStatus, IsGraspable, ListObjects, QueryObjects

CALL_TIMEOUT_S = 30.0


class PerceptionClient:
    """Clients of the node's services (`grasp`, `objects`, `add`, `list`, `job`) and the node's /diagnostics statuses
    (`diagnostics`: dicts of time (monotonic), level, message and the key/values). rclpy must be initialised."""

    def __init__(self, node_name: str = "/vlkd_perception", client_name: str = "vlkd_client") -> None:
        self.ns = node_name
        self.node = rclpy.create_node(client_name)
        self.grasp = self.node.create_client(IsGraspable, f"{node_name}/is_graspable")
        self.objects = self.node.create_client(QueryObjects, f"{node_name}/query_objects")
        self.add = self.node.create_client(AddObject, f"{node_name}/add_object")
        self.list = self.node.create_client(ListObjects, f"{node_name}/list_objects")
        self.job = self.node.create_client(GetJobStatus, f"{node_name}/get_job_status")
        self.diagnostics: list[dict[str, Any]] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self.ns.strip("/")):
                level = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)
                self.diagnostics.append({"time": time.monotonic(), "level": level, "message": status.message,
                                         **{kv.key: kv.value for kv in status.values}})

    def wait_for_services(self, timeout: float, extra: tuple = ()) -> bool:
        """Wait until the node's services (and the `extra` clients) are discovered."""
        end = time.monotonic() + timeout
        for client in (self.grasp, self.objects, self.add, self.list, self.job, *extra):
            if not client.wait_for_service(timeout_sec=max(0.1, end - time.monotonic())):
                return False
        return True

    def call(self, client: Any, request: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Call a service and wait for the reply; None on timeout (the pending request is dropped)."""
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def ask(self, name: str, image: Any = None, timeout: float = CALL_TIMEOUT_S) -> Any:
        """IsGraspable for one object name, on the latest camera frame or on `image` (sensor_msgs/Image)."""
        request = IsGraspable.Request(object_name=name)
        if image is not None:
            request.image = image
        return self.call(self.grasp, request, timeout)

    def ask_many(self, names: list[str], image: Any = None, timeout: float = CALL_TIMEOUT_S) -> Any:
        """QueryObjects: every name judged on one frame, the latest camera frame or `image` (sensor_msgs/Image);
        no names: every object the node knows. The reply's names, scores and graspable are in the same order."""
        request = QueryObjects.Request(object_names=list(names))
        if image is not None:
            request.image = image
        return self.call(self.objects, request, timeout)

    def flood(self, names: list[str], total: int, in_flight: int,
              hooks: dict[int, list[Callable[[], None]]] | None = None,
              timeout: float = 2 * CALL_TIMEOUT_S) -> list[tuple[str, Any, float]]:
        """`total` IsGraspable calls cycling through `names` with up to `in_flight` outstanding (the functions in
        hooks[i] run before call i); (name, response, round trip in s) per answer, in the order they came."""
        results: list[tuple[str, Any, float]] = []
        lock, slots = threading.Lock(), threading.Semaphore(in_flight)
        for i in range(total):
            for hook in (hooks or {}).get(i, []):
                hook()
            slots.acquire()
            name, sent = names[i % len(names)], time.perf_counter()

            def done(future: Any, name: str = name, sent: float = sent) -> None:
                with lock:
                    results.append((name, future.result(), time.perf_counter() - sent))
                slots.release()

            self.grasp.call_async(IsGraspable.Request(object_name=name)).add_done_callback(done)
        end = time.monotonic() + timeout
        while len(results) < total and time.monotonic() < end:
            time.sleep(0.01)
        with lock:
            return list(results)

    def close(self) -> None:
        """Stop spinning and destroy the client node (call before or after rclpy.shutdown)."""
        self.executor.shutdown(timeout_sec=1.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def answer_lines(response: Any) -> list[str]:
    """A QueryObjects reply as text: one line per name (graspable or not, score, and the object's location in the
    judged image when the model gives one), or the reason it failed."""
    if not response.success:
        return [f"not answered: {response.message}"]
    lines = []
    for name, graspable, score, where in zip(response.names, response.graspable, response.scores,
                                             response.locations):
        line = f"{name}: {'graspable' if graspable else 'not graspable'} (score {score:.3f})"
        if where.valid:
            line += (f", seen at pixel ({where.u:.1f}, {where.v:.1f}) in box [{where.x_min:.1f}, {where.y_min:.1f}, "
                     f"{where.x_max:.1f}, {where.y_max:.1f}], confidence {where.confidence:.2f}")
        lines.append(line)
    return lines + [f"({response.message}; model {response.model_version})"]


def interrupt(peer: subprocess.Popen, timeout: float = 15.0) -> str:
    """Stop a peer process (camera, node) as a user would, with Ctrl-C, killing it after `timeout` s; returns
    what it wrote to its piped stdout, or else to its piped stderr."""
    if peer.poll() is None:
        peer.send_signal(signal.SIGINT)
        try:
            peer.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            peer.kill()
    stream = peer.stdout or peer.stderr
    return stream.read() if stream else ""
