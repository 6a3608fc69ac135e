"""What the node publishes: `~/results` (GraspResult) at results_rate and beside every answer, `~/debug_image` (the
judged frame annotated) and /diagnostics (the node's report)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import Image

from vlkd_interfaces.msg import GraspResult
from vlkd_ros.ros.debug_image import annotate
from vlkd_ros.ros.diagnostics import diagnostic_status
from vlkd_ros.ros.image_msgs import ImageFormatError, image_to_rgb, numpy_to_image

if TYPE_CHECKING:
    from vlkd_ros.ros.perception_node import PerceptionNode


class Publishers:
    """The publishers and timers of a PerceptionNode: /diagnostics from the start, `~/results` and `~/debug_image`
    between configure and cleanup (lifecycle publishers). It reads the node's `params`, `state`, `model`, `frame`,
    `age`, `queries`, `frame_jobs`, `image_topic` and `report`."""

    def __init__(self, node: PerceptionNode) -> None:
        """Create the /diagnostics publisher and its timer, and the ~/results timer (at results_rate)."""
        self._node = node
        self._results_pub = self._debug_pub = None
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._results_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = node.create_timer(float(node.params["diagnostics_period"]), self._publish_diagnostics,
                                             callback_group=self._diag_group)
        self._results_timer = None
        self.schedule_results()

    def create_lifecycle_publishers(self) -> None:
        """Create ~/results and ~/debug_image (configure)."""
        self._results_pub = self._node.create_lifecycle_publisher(GraspResult, "~/results", 10)
        self._debug_pub = self._node.create_lifecycle_publisher(Image, "~/debug_image", 1)

    def destroy_lifecycle_publishers(self) -> None:
        """Destroy ~/results and ~/debug_image (cleanup)."""
        for pub in (self._results_pub, self._debug_pub):
            if pub is not None:
                self._node.destroy_lifecycle_publisher(pub)
        self._results_pub = self._debug_pub = None

    def schedule_results(self) -> None:
        """(Re)create the ~/results timer at results_rate, none at 0: the executor wakes only when one is due."""
        if self._results_timer is not None:
            self._node.destroy_timer(self._results_timer)
            self._results_timer = None
        rate = float(self._node.params["results_rate"])
        if rate > 0:
            self._results_timer = self._node.create_timer(1.0 / rate, self._on_results_tick,
                                                          callback_group=self._results_group)

    def publish_result(self, stamp: TimeMsg, frame_id: str, names: list[str], scores: list[float],
                       graspable: list[bool], model_version: str) -> None:
        """Publish one GraspResult on ~/results."""
        pub = self._results_pub
        if pub is None or self._node.state != "active":
            return
        msg = GraspResult()
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        msg.names, msg.scores = list(names), [float(s) for s in scores]
        msg.graspable = [bool(g) for g in graspable]
        msg.model_version = model_version
        pub.publish(msg)

    async def _on_results_tick(self) -> None:
        """At `results_rate` (its timer's period), judge the latest fresh observation for every known object and
        publish it (from the embedding the queries share)."""
        if float(self._node.params["results_rate"]) <= 0 or self._node.state != "active":
            return
        model, frame = self._node.model, self._node.frame
        if model is None or frame is None:
            return
        limit = float(self._node.params["max_frame_age"])
        names = [name for name, _ in model.objects()]
        if not names or (limit > 0 and self._node.age(frame) > limit):
            return
        try:
            entry = await self._node.queries.query_embedding(model, self._node.get_clock().now().nanoseconds)
            result = model.answer(entry.value, names)[0]
        except Exception as err:  # noqa: BLE001 - a bad frame must not stop the timer
            self._node.get_logger().warning(f"results: cannot judge the latest frame: {err}",
                                            throttle_duration_sec=10.0)
            return
        msg = entry.meta["base_rgb"].msg
        scores, graspable = zip(*(self._node.queries.decide(result[name]) for name in names))
        self.publish_result(msg.header.stamp, msg.header.frame_id, names, list(scores), list(graspable),
                            str(entry.value.model_version))
        if self._node.params["publish_debug_image"] and self._debug_pub is not None:
            try:
                rgb = image_to_rgb(msg, max_pixels=int(self._node.params["max_image_pixels"]),
                                   shrink_to=int(self._node.params["image_size"]) or int(model.image_size or 0))
            except ImageFormatError:
                return
            self._debug_pub.publish(numpy_to_image(annotate(rgb, names, scores, graspable), "rgb8",
                                                   msg.header.frame_id, msg.header.stamp))

    def _publish_diagnostics(self) -> None:
        """Publish model version, latency, frame age, camera rate and queue lengths on /diagnostics."""
        for job in self._node.frame_jobs.expire(self._node.image_topic):
            self._node.get_logger().warning(f"job {job.job_id} ({job.name!r}): {job.message}")
        array = DiagnosticArray(status=[diagnostic_status(self._node.report())])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._diag_pub.publish(array)
