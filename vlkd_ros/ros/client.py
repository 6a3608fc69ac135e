"""Python client of a running `vlkd_perception` node: its services and its object-learning action over DDS and its
/diagnostics, spun on a background executor thread so calls can block from the caller's thread.

    rclpy.init()
    client = PerceptionClient("/vlkd_perception")
    client.wait_for_services(30.0)
    reply = client.ask("coffee mug")          # IsGraspable.Response, or None on timeout
    many = client.ask_many(["mug", "plate"])  # QueryObjects.Response: every name judged on one frame
    print("\n".join(answer_lines(many)))     # one line per name, with where the model sees it when it says
    status, result = client.add_object(AddObject.Goal(name="blue cup", take_next_frames=5), print)
    client.call(client.remove, RemoveObject.Request(name="blue cup"))   # undo it
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
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vlkd_interfaces.action import AddObject
from vlkd_interfaces.srv import IsGraspable, ListObjects, QueryObjects, RemoveObject

CALL_TIMEOUT_S = 30.0


class PerceptionClient:
    """Clients of the node's services (`grasp`, `objects`, `list`, `remove`), of its ~/add_object action (`learn`)
    and the node's /diagnostics statuses (`diagnostics`: dicts of time (monotonic), level, message and the
    key/values). rclpy must be initialised."""

    def __init__(self, node_name: str = "/vlkd_perception", client_name: str = "vlkd_client") -> None:
        self.ns = node_name
        self.node = rclpy.create_node(client_name)
        self.grasp = self.node.create_client(IsGraspable, f"{node_name}/is_graspable")
        self.objects = self.node.create_client(QueryObjects, f"{node_name}/query_objects")
        self.list = self.node.create_client(ListObjects, f"{node_name}/list_objects")
        self.remove = self.node.create_client(RemoveObject, f"{node_name}/remove_object")
        self.learn = ActionClient(self.node, AddObject, f"{node_name}/add_object")
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
        """Wait until the node's services, its action (and the `extra` clients) are discovered."""
        end = time.monotonic() + timeout
        for client in (self.grasp, self.objects, self.list, self.remove, *extra):
            if not client.wait_for_service(timeout_sec=max(0.1, end - time.monotonic())):
                return False
        return self.learn.wait_for_server(timeout_sec=max(0.1, end - time.monotonic()))

    def call(self, client: Any, request: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Call a service and wait for the reply; None on timeout (the pending request is dropped)."""
        future = client.call_async(request)
        if not wait(future, timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def send_goal(self, goal: AddObject.Goal, feedback: Callable[[AddObject.Feedback], None] | None = None,
                  timeout: float = CALL_TIMEOUT_S) -> Any:
        """Send an ~/add_object goal; its ClientGoalHandle once the node took it (None: no answer within `timeout`).
        `feedback` gets each AddObject.Feedback (on the client's spin thread)."""
        on_feedback = (lambda msg: feedback(msg.feedback)) if feedback is not None else None
        future = self.learn.send_goal_async(goal, feedback_callback=on_feedback)
        return future.result() if wait(future, timeout) else None

    def result(self, handle: Any, timeout: float = CALL_TIMEOUT_S) -> tuple[int, AddObject.Result] | None:
        """(status, result) of a goal once it ended, status one of action_msgs/GoalStatus STATUS_SUCCEEDED,
        STATUS_ABORTED (refused or failed: see result.message) or STATUS_CANCELED; None when not within `timeout`."""
        future = handle.get_result_async()
        if not wait(future, timeout):
            return None
        reply = future.result()
        return int(reply.status), reply.result

    def cancel(self, handle: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Ask the node to cancel a goal (its job then changes nothing); the CancelGoal response, None on timeout."""
        future = handle.cancel_goal_async()
        return future.result() if wait(future, timeout) else None

    def add_object(self, goal: AddObject.Goal, feedback: Callable[[AddObject.Feedback], None] | None = None,
                   timeout: float = 3 * CALL_TIMEOUT_S) -> tuple[int, AddObject.Result] | None:
        """Teach the node an object and wait for the goal's end: (status, result) as `result`; None on timeout."""
        end = time.monotonic() + timeout
        handle = self.send_goal(goal, feedback, timeout)
        if handle is None or not handle.accepted:
            return None
        return self.result(handle, max(0.1, end - time.monotonic()))

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


def wait(future: Any, timeout: float) -> bool:
    """Block until an rclpy future (completed on the client's spin thread) is done; False after `timeout` s."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    return done.wait(timeout)


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
