"""The node's questions: `~/is_graspable`, `~/query_objects` and `~/list_objects`, answered from the cached embedding
of the latest camera observation (computed once per observation, ahead of the queries by the prefetch thread) or
of a request image (on a model worker)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from builtin_interfaces.msg import Time as TimeMsg
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vlkd_interfaces.msg import ObjectLocation
from vlkd_interfaces.srv import IsGraspable, ListObjects, QueryObjects
from vlkd_ros.inference.locations import frame_location
from vlkd_ros.ros.diagnostics import QueryStats
from vlkd_ros.ros.frame_cache import CacheEntry, EmbeddingCache, Prefetcher
from vlkd_ros.ros.parameters import PREFETCH_WHILE_QUERIED_S
from vlkd_ros.ros.requests import QueryError, registry_name

if TYPE_CHECKING:  # importing vlkd_ros.inference loads the model's libraries: done only when the model is loaded
    from vlkd_ros.inference.protocol import GraspEmbedding, GraspModel
    from vlkd_ros.ros.perception_node import PerceptionNode


@dataclass
class Judged:
    """One model answer: per-name results about the judged frame, its stamp, frame_id and size (pixels), the weights'
    version."""

    results: dict[str, dict[str, Any]]
    stamp: TimeMsg
    frame_id: str
    model_version: str
    note: str
    width: int
    height: int

    def location(self, name: str) -> ObjectLocation:
        """Where the model sees `name` in the judged frame (valid false: the model gives no location)."""
        found = frame_location(self.results[name].get("location"), self.width, self.height)
        if found is None:
            return ObjectLocation()
        (x_min, y_min, x_max, y_max) = found.box
        return ObjectLocation(valid=True, u=found.u, v=found.v, x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max,
                              confidence=found.confidence)


class QueryServices:
    """The query services of a PerceptionNode, their latency figures (`stats`), the embeddings they answer from
    (`embeddings`) and the thread that computes them ahead (`prefetcher`). It reads the node's `params`, `model`,
    `frame`, `observation`, `age`, `require_model`, `in_worker`, `model_input` and `publishing`."""

    def __init__(self, node: PerceptionNode, query_group: Any, admin_group: Any) -> None:
        """Create the services (queries in `query_group`, the listing in `admin_group`) and the prefetch thread
        (started by `prefetcher.start()`)."""
        self._node = node
        self.prefetcher = Prefetcher(self._prefetch, lambda: float(node.params["prefetch_rate"]),
                                     lambda: float(node.params["prefetch_busy_share"]))
        self.embeddings = EmbeddingCache()
        self.stats = QueryStats()
        self._last_query = 0.0  # monotonic time of the latest latest-frame query (prefetch runs while queried)
        request_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
        node.create_service(IsGraspable, "~/is_graspable", self.on_is_graspable, qos_profile=request_qos,
                            callback_group=query_group)
        node.create_service(QueryObjects, "~/query_objects", self.on_query_objects, qos_profile=request_qos,
                            callback_group=query_group)
        node.create_service(ListObjects, "~/list_objects", self.on_list_objects, callback_group=admin_group)

    def frame_arrived(self) -> None:
        """Wake the prefetch for a new camera frame while latest-frame queries keep coming."""
        if self._node.params["prefetch_rate"] > 0 and time.monotonic() - self._last_query < PREFETCH_WHILE_QUERIED_S:
            self.prefetcher.wake()

    async def on_is_graspable(self, request: IsGraspable.Request,
                              response: IsGraspable.Response) -> IsGraspable.Response:
        """Judge one object in the request's image or the latest camera frame; never raises."""
        start = time.perf_counter()
        self.stats.begin()
        try:
            model = self._node.require_model()
            name = request.object_name.strip()
            if not name:
                raise QueryError("object_name is empty: give the name of a known object (see ~/list_objects)")
            unregistered = self._check_names(model, [name])
            judged = await self._judge(model, request.image, [name], response)
            score, graspable = self.decide(judged.results[name])
            response.success, response.score, response.graspable = True, score, graspable
            response.frame_stamp, response.model_version = judged.stamp, judged.model_version
            response.location = judged.location(name)
            response.message = judged.note if not unregistered else \
                f"{judged.note}; zero-shot: {name!r} is not in the registry"
            self._node.publishing.publish_result(judged.stamp, judged.frame_id, [name], [score], [graspable],
                                                 judged.model_version)
        except QueryError as err:
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self._node.get_logger().error(f"is_graspable({request.object_name!r}) failed: "
                                          f"{type(err).__name__}: {err}")
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = f"inference failed: {type(err).__name__}: {err}"
            response.location = ObjectLocation()
        finally:
            self.stats.end(time.perf_counter() - start, bool(response.success))
        if not response.success:
            self._node.get_logger().debug(f"is_graspable({request.object_name!r}): {response.message}")
        return response

    async def on_query_objects(self, request: QueryObjects.Request,
                               response: QueryObjects.Response) -> QueryObjects.Response:
        """Judge several objects (every known one when none are named) in one frame, one model pass; never raises."""
        start = time.perf_counter()
        self.stats.begin()
        try:
            model = self._node.require_model()
            names = [name.strip() for name in request.object_names]
            if not names:
                names = [name for name, _ in model.objects()]
                if not names:
                    raise QueryError("object_names is empty and the model knows no objects: name the objects")
            empty = [i for i, name in enumerate(names) if not name]
            if empty:
                raise QueryError(f"object_names{empty} empty: give the names of the objects (see ~/list_objects)")
            unregistered = self._check_names(model, names)
            judged = await self._judge(model, request.image, names, response)
            decided = [self.decide(judged.results[name]) for name in names]
            response.names = names
            response.scores = [score for score, _ in decided]
            response.graspable = [graspable for _, graspable in decided]
            response.locations = [judged.location(name) for name in names]
            response.success, response.frame_stamp = True, judged.stamp
            response.model_version = judged.model_version
            response.message = judged.note if not unregistered else \
                f"{judged.note}; zero-shot: {', '.join(map(repr, unregistered))} not in the registry"
            self._node.publishing.publish_result(judged.stamp, judged.frame_id, names, list(response.scores),
                                 list(response.graspable), judged.model_version)
        except QueryError as err:
            response.success, response.message = False, str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self._node.get_logger().error(f"query_objects({list(request.object_names)!r}) failed: "
                                          f"{type(err).__name__}: {err}")
            response.success, response.message = False, f"inference failed: {type(err).__name__}: {err}"
        finally:
            if not response.success:
                response.names, response.scores, response.graspable, response.locations = [], [], [], []
            self.stats.end(time.perf_counter() - start, bool(response.success))
        return response

    def decide(self, result: dict) -> tuple[float, bool]:
        """(score, graspable) of one model answer under the `threshold` parameter."""
        score, threshold = float(result["score"]), float(self._node.params["threshold"])
        return score, (bool(result["graspable"]) if threshold < 0 else score >= threshold)

    def _check_names(self, model: GraspModel, names: list[str]) -> list[str]:
        """The names that are not in the registry (QueryError for names it refuses, and for unknown names when
        known_objects_only is set)."""
        known = {known_name for known_name, _ in model.objects()}
        unregistered = [name for name in names if registry_name(name) not in known]
        if unregistered and self._node.params["known_objects_only"]:
            what = ", ".join(map(repr, unregistered))
            raise QueryError(f"unknown object {what}; known objects: {', '.join(sorted(known)) or 'none'}; "
                             "teach it with ~/add_object (or set known_objects_only to false for zero-shot)")
        return unregistered

    async def _judge(self, model: GraspModel, image: Image, names: list[str], response: Any) -> Judged:
        """Answer `names` about `image` (embedded on a model worker), or about the latest camera observation when
        `image` is empty (from its cached embedding, computed once per observation); QueryError says what was
        wrong. Sets response.frame_stamp to the latest frame's stamp first, so a refusal of a stale frame names
        it."""
        if _has_image(image):
            if model.views != ["base_rgb"]:
                raise QueryError(f"model {model.model_version} stacks views {model.views}; a request image "
                                 "gives only base_rgb: leave image empty to judge the cameras' latest frames")
            embedding = await self._node.in_worker(lambda: self._embed(model, self._node.model_input(model, image)))
            stamp, frame_id, size = image.header.stamp, image.header.frame_id, (image.width, image.height)
            note = f"request image, {image.width}x{image.height} {image.encoding}"
        else:
            self._last_query = time.monotonic()
            if self._node.frame is not None:
                response.frame_stamp = self._node.frame.msg.header.stamp
            now_ns = self._node.get_clock().now().nanoseconds
            entry = await self.query_embedding(model, now_ns)
            embedding, frame = entry.value, entry.meta["base_rgb"]
            msg = frame.msg
            stamp, frame_id, size = msg.header.stamp, msg.header.frame_id, (msg.width, msg.height)
            note = f"camera frame {self._node.age(frame, now_ns):.3f} s old, {msg.width}x{msg.height} {msg.encoding}"
        try:
            results = model.answer(embedding, names)[0]
        except ValueError as err:
            raise QueryError(str(err)) from err
        return Judged(results, stamp, frame_id, str(embedding.model_version), note, *size)

    @staticmethod
    def _embed(model: GraspModel, views: Any) -> GraspEmbedding:
        """The model's embedding of one observation (QueryError for an input it refuses)."""
        try:
            return model.embed(views)
        except ValueError as err:
            raise QueryError(str(err)) from err

    def _fresh_enough(self, model: GraspModel, now_ns: int) -> Callable[[CacheEntry], bool]:
        """Whether a cached entry may answer a query now: same weights, every frame within max_frame_age."""
        version, limit = str(model.model_version), float(self._node.params["max_frame_age"])
        return lambda entry: entry.key[0] == version and (limit <= 0 or all(self._node.age(f, now_ns) <= limit
                                                                            for f in entry.meta.values()))

    async def query_embedding(self, model: GraspModel, now_ns: int) -> CacheEntry:
        """The embedding a latest-frame query answers from: a cached one at once (see `_latest_embedding`), else
        the latest observation's, computed on a model worker."""
        key, _ = self._node.observation(model, now_ns)
        entry = self.embeddings.lookup(key, self._fresh_enough(model, now_ns),
                                       prefer_fallback=float(self._node.params["prefetch_rate"]) > 0)
        if entry is not None:
            return entry
        return await self._node.in_worker(lambda: self._latest_embedding(model, now_ns))

    def _latest_embedding(self, model: GraspModel, now_ns: int | None = None, prefetch: bool = False
                          ) -> CacheEntry:
        """The cached embedding of the latest fresh observation (every view the model reads), computed here if
        missing (blocking: the prefetch thread and model workers call it). A query takes a fresh older
        observation's embedding instead of waiting while another computes the latest, and instead of computing
        at all when prefetch_rate > 0 (the prefetch embeds new frames); the prefetch (`prefetch`) always
        computes. entry.meta: {view: Frame} of the observation it embeds; QueryError when a view has no fresh
        frame or a frame cannot be read."""
        now_ns = self._node.get_clock().now().nanoseconds if now_ns is None else now_ns
        key, frames = self._node.observation(model, now_ns)

        def compute() -> GraspEmbedding:
            others = {view: f.msg for view, f in frames.items() if view != "base_rgb"}
            return self._embed(model, self._node.model_input(model, frames["base_rgb"].msg, others))

        entry, _ = self.embeddings.get(key, compute, frames,
                                       fallback=None if prefetch else self._fresh_enough(model, now_ns),
                                       prefer_fallback=float(self._node.params["prefetch_rate"]) > 0)
        return entry

    def _prefetch(self) -> None:
        """Embed the latest observation ahead of the queries (the prefetch thread, at most prefetch_rate
        Hz, woken by new frames while latest-frame queries keep coming)."""
        model = self._node.model
        if model is None or self._node.state != "active":
            return
        try:
            self._latest_embedding(model, prefetch=True)
        except QueryError:
            pass  # no fresh frame yet, or one the model cannot read: the queries will say why
        except Exception as err:  # noqa: BLE001 - a bad frame must not stop prefetching
            self._node.get_logger().warning(f"prefetch: cannot embed the latest frame: {err}",
                                            throttle_duration_sec=10.0)

    def on_list_objects(self, request: ListObjects.Request, response: ListObjects.Response) -> ListObjects.Response:
        """Names and descriptions the model knows; empty while no model is loaded."""
        model = self._node.model
        if model is not None:
            objects = list(model.objects())
            response.names = [name for name, _ in objects]
            response.descriptions = [desc or "" for _, desc in objects]
            response.model_version = str(model.model_version)
        return response


def _has_image(img: Image) -> bool:
    """Whether a request carries an image (width, height or data set) rather than 'use the camera'."""
    return img.width > 0 or img.height > 0 or len(img.data) > 0
