"""ROS 2 lifecycle node `vlkd_perception`: camera frames in, grasp-feasibility answers, results and diagnostics out.

The node class, its services and lifecycle, and `run`/`main`; it reaches the model only as a `GraspModel`.
"""
from __future__ import annotations

import gc
import sys
import threading
import time
from concurrent.futures import Future as WorkerFuture, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image

from vlkd_formats.errors import VlkdError
from vlkd_interfaces.msg import GraspResult, ObjectLocation
from vlkd_interfaces.srv import IsGraspable, ListObjects, QueryObjects, RemoveObject
from vlkd_ros.ros import log_bridge
from vlkd_ros.ros.debug_image import annotate
from vlkd_ros.ros.diagnostics import NodeReport, QueryStats, RateMeter, diagnostic_status
from vlkd_ros.ros.frame_cache import CacheEntry, EmbeddingCache, Prefetcher, observation_key
from vlkd_ros.ros.frame_jobs import FrameJobs
from vlkd_ros.ros.image_msgs import ImageFormatError, image_to_depth, image_to_rgb, numpy_to_image
from vlkd_ros.inference.locations import frame_location
from vlkd_ros.ros.object_learning import ObjectLearning
from vlkd_ros.ros.parameters import (PARAMETERS, PREFETCH_WHILE_QUERIED_S, RELIABILITIES, VIEW_TOPICS,
                                     accepted_changes, check_choices, configure_values, served_views)
from vlkd_ros.ros.requests import QueryError, registry_name

if TYPE_CHECKING:  # importing vlkd_ros.inference loads torch: done only when the model is loaded (on activate)
    from vlkd_ros.inference.protocol import GraspEmbedding, GraspModel

NODE_NAME = "vlkd_perception"
MODEL_WORKERS = 2  # threads that run the model for queries (request images, a missing embedding): two at once
JOB_DRAIN_S = 60.0
SHUTDOWN_WAIT_S = 10.0  # how long Ctrl-C waits for running callbacks before their node is destroyed
SHOT_SIDE = 128  # take_next_frames: frames are judged (flat, noise, near-duplicate) at most this big
# `run` refuses to start when the ROS graph shows another node of the same fully qualified name within this many
# seconds, before it spins (so before any service answers or the model loads). Discovery takes time: on one host a
# running node showed in the graph after 0.1-1.7 s, and after up to 2.5 s with both cores busy. It also reaches only
# the node's discovery range: a twin that discovery has not shown by then (a slow network, another host not yet
# discovered, a discovery server that is down) is not refused, and two nodes started within the same seconds can
# each see the other and both refuse. Whatever its name, a second node learning into the same model or state dir
# is refused by that dir's writer lock (at its first ~/add_object goal).
TWIN_WAIT_S = 5.0
TWIN_POLL_S = 0.05


@dataclass
class Frame:
    """A received camera message, kept unconverted, with its arrival time on the node clock."""

    msg: Image
    received_ns: int


class StartError(VlkdError):
    """The node cannot start: a node of its name already runs, or autostart cannot load its model dir."""


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


class PerceptionNode(LifecycleNode):
    """Answers "is object X graspable?" about the latest camera frame or a given image.

    Lifecycle: configure reads the parameters and creates publishers, activate loads the model (a
    `vlkd_ros.inference.GraspFeasibility`) and subscribes to the camera, deactivate unsubscribes and frees the
    model, cleanup destroys the publishers. `run()` configures and activates at start when the `autostart`
    parameter is true (the default), so it also runs without a lifecycle manager; a model dir that does not load
    then ends `run()` with a StartError. Any other failed transition, and every one under a lifecycle manager, is
    logged and reported on /diagnostics, and the node stays up in the state reached so it can be fixed and retried.
    """

    def __init__(self, **kwargs: Any) -> None:
        """Declare parameters, services, publishers and timers (keyword arguments go to LifecycleNode)."""
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        self._log_handler = log_bridge.attach(self.get_logger())
        # before the parameter checks: destroy_node() (also after a refused parameter) stops them
        self._prefetcher = Prefetcher(self._prefetch, lambda: float(self.params["prefetch_rate"]),
                                      lambda: float(self.params["prefetch_busy_share"]))
        self._workers = ThreadPoolExecutor(MODEL_WORKERS, thread_name_prefix="vlkd-model")
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.params = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        check_choices(self.params)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._state = "unconfigured"
        self._error = ""
        self._load_error = ""  # the latest failed transition's reason when the model dir could not be loaded
        self._exit_on_load_error = False  # during autostart(exit_on_load_error=True): its caller reports it
        self._config: dict[str, Any] = {}
        self._paths: tuple[Path, Path | None] | None = None  # resolved at configure: (model dir, state dir | None)
        self._model: GraspModel | None = None
        self._model_lock = threading.Lock()
        self._frame: Frame | None = None
        self._views_latest: dict[str, Frame] = {}
        self._camera_info: CameraInfo | None = None
        self._frame_count = 0
        self.frame_jobs = FrameJobs()
        self._embeddings = EmbeddingCache()
        self._last_query = 0.0  # monotonic time of the latest latest-frame query (prefetch runs while queried)
        self._stats = QueryStats()
        self._camera_rate = RateMeter()
        self._subs: list = []
        self._results_pub = None
        self._debug_pub = None

        # `run` spins the node on one thread: every callback is short (frames are only stored, queries answer from
        # cached embeddings); whatever runs the model for a query awaits a model worker (`_in_worker`) while the
        # executor goes on. The groups keep the node correct under a multi-threaded executor too: frames in their
        # own group, queries reentrant, each reading the cached embedding of the observation it judges.
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._query_group = ReentrantCallbackGroup()
        self._admin_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._results_group = MutuallyExclusiveCallbackGroup()
        request_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.create_service(IsGraspable, "~/is_graspable", self._on_is_graspable,
                            qos_profile=request_qos, callback_group=self._query_group)
        self.create_service(QueryObjects, "~/query_objects", self._on_query_objects,
                            qos_profile=request_qos, callback_group=self._query_group)
        self.create_service(ListObjects, "~/list_objects", self._on_list_objects, callback_group=self._admin_group)
        self.create_service(RemoveObject, "~/remove_object", self._on_remove_object, callback_group=self._admin_group)
        self._learning = ObjectLearning(self, self._admin_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(float(self.params["diagnostics_period"]), self._publish_diagnostics,
                                             callback_group=self._diag_group)
        self._results_timer = None
        self._schedule_results()

    def destroy_node(self) -> Any:
        """Stop the prefetch thread and the model workers, detach the logging bridge, then destroy the node."""
        self._prefetcher.stop()
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._learning.destroy()
        log_bridge.detach(self._log_handler)
        return super().destroy_node()

    # ----- parameters -----------------------------------------------------------------------------------

    def parameter_values(self) -> dict[str, Any]:
        """The node's own parameters (not rclpy's built-in ones) as {name: value}."""
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Accept run-time changes, refuse configure-time ones unless unconfigured, check choices."""
        try:
            changes = accepted_changes({param.name: param.value for param in params}, self._state)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.params.update(changes)
        for name, value in changes.items():
            self.get_logger().info(f"parameter {name} set to {value!r}")
        if "results_rate" in changes:
            self._schedule_results()
        return SetParametersResult(successful=True)

    def _schedule_results(self) -> None:
        """(Re)create the ~/results timer at results_rate, none at 0: the executor wakes only when one is due."""
        if self._results_timer is not None:
            self.destroy_timer(self._results_timer)
            self._results_timer = None
        rate = float(self.params["results_rate"])
        if rate > 0:
            self._results_timer = self.create_timer(1.0 / rate, self._on_results_tick,
                                                    callback_group=self._results_group)

    # ----- lifecycle ------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the configure-time parameters, resolve the model and state dirs, and create the publishers."""
        config = configure_values(self.params)
        try:
            paths = model_paths(config["model_dir"], config["state_dir"])
        except Exception as err:  # noqa: BLE001 - no model dir there: stay unconfigured, saying why
            return self._fail(load_failure(config["model_dir"], err), load=True)
        if not config["image_topic"]:
            return self._fail("parameter image_topic is empty: set it to the colour camera topic")
        self._config, self._paths = config, paths
        self._results_pub = self.create_lifecycle_publisher(GraspResult, "~/results", 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        self._state, self._error, self._load_error = "inactive", "", ""
        model_dir, state_dir = paths
        self.get_logger().info(f"configured: model_dir={model_dir} "
                               f"state_dir={state_dir or f'{model_dir} (the model dir itself)'} "
                               f"device={config['device']} image_topic={config['image_topic']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and subscribe to the camera topics."""
        cfg = self._config
        start = time.monotonic()
        try:
            model = load_grasp_model(*self._paths, cfg["device"], cfg["backend"], int(cfg["inference_threads"]))
        except Exception as err:  # noqa: BLE001 - any load failure must leave the node inactive, not dead
            return self._fail(load_failure(cfg["model_dir"], err), load=True)
        try:
            views = served_views(model.views)
        except ValueError as err:
            return self._fail(str(err))
        missing = [f"{VIEW_TOPICS[v]} (for view {v})" for v in views if not cfg[VIEW_TOPICS[v]]]
        if missing:
            return self._fail(f"model {model.model_version} stacks views {views} but parameter(s) "
                              f"{', '.join(missing)} are empty: set them to the camera topics")
        with self._model_lock:
            self._embeddings.clear()
            self._model = model
        freeze_heap()
        self._prefetcher.start()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=RELIABILITIES[cfg["image_reliability"]])
        self._subs = [self.create_subscription(Image, cfg["image_topic"], self._on_image, qos,
                                               callback_group=self._camera_group)]
        for view in views[1:]:
            self._subs.append(self.create_subscription(Image, cfg[VIEW_TOPICS[view]], self._view_callback(view),
                                                       qos, callback_group=self._camera_group))
        if cfg["camera_info_topic"]:
            self._subs.append(self.create_subscription(CameraInfo, cfg["camera_info_topic"], self._on_camera_info,
                                                       qos, callback_group=self._camera_group))
        self._state, self._error, self._load_error = "active", "", ""
        names = [name for name, _ in model.objects()]
        self.get_logger().info(
            f"active: model {model.model_version} loaded in {time.monotonic() - start:.1f} s, {len(names)} objects, "
            f"camera {cfg['image_topic']} ({cfg['image_reliability']}), services "
            f"{self.get_fully_qualified_name()}/{{is_graspable,query_objects,list_objects,remove_object}}, action "
            f"{self.get_fully_qualified_name()}/add_object")
        return super().on_activate(state)

    def _fail(self, reason: str, load: bool = False) -> TransitionCallbackReturn:
        """Keep why a transition failed (`load`: the model dir could not be loaded) for /diagnostics, log it (unless
        an autostart that ends the process on it reports it), and return FAILURE."""
        self._error, self._load_error = reason, reason if load else ""
        if not (load and self._exit_on_load_error):
            self.get_logger().error(reason)
        return TransitionCallbackReturn.FAILURE

    @property
    def load_error(self) -> str:
        """Why the latest failed transition could not load the model dir; '' when it loaded or that was not why."""
        return self._load_error

    def autostart(self, exit_on_load_error: bool = False) -> bool:
        """Configure and activate; False on failure, logged with how to recover, the node staying up in the state
        reached. `exit_on_load_error`: a model dir that does not load is left unlogged in `load_error`, for the
        caller that ends the process on it to report (`run`)."""
        self._exit_on_load_error = exit_on_load_error
        try:
            for step in (self.trigger_configure, self.trigger_activate):
                if step() != TransitionCallbackReturn.SUCCESS:
                    if not (exit_on_load_error and self._load_error):
                        self.get_logger().error(
                            f"autostart stopped: {step.__name__[len('trigger_'):]} failed; the node stays "
                            f"{self._state}. Fix the parameters and drive the lifecycle (ros2 lifecycle set "
                            f"{self.get_fully_qualified_name()} configure / activate), or restart it")
                    return False
            return True
        finally:
            self._exit_on_load_error = False

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe from the camera and free the model."""
        self._state = "inactive"
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._frame = None
        self._views_latest = {}
        self._camera_info = None
        self.frame_jobs.fail_collecting("the node was deactivated before the frames arrived")
        self.release_model()
        self.get_logger().info("inactive: camera unsubscribed, model freed")
        return super().on_deactivate(state)

    def release_model(self) -> None:
        """Stop prefetching and drop the model (and its cached embeddings) after its few-shot jobs finish."""
        self._prefetcher.stop()
        with self._model_lock:
            model, self._model = self._model, None
            self._embeddings.clear()
        self._drain_jobs(model)
        gc.unfreeze()  # the model's objects can be collected again

    def _drain_jobs(self, model: GraspModel | None) -> None:
        """Let the model's running few-shot jobs commit to its registry before the model is dropped."""
        if model is None:
            return
        running = [job.job_id for job in model.jobs() if job.state in ("queued", "running")]
        if running:
            self.get_logger().info(f"waiting up to {JOB_DRAIN_S:.0f} s for few-shot jobs {', '.join(running)} "
                                   "to finish so the object registry stays consistent")
        model.close(timeout=JOB_DRAIN_S)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers made in on_configure."""
        for pub in (self._results_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._results_pub = self._debug_pub = None
        self._state, self._paths = "unconfigured", None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and stop answering."""
        if self._state == "active":
            self.on_deactivate(state)
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    # ----- camera callbacks: store only, never run the model here -----------------------------------------

    def _on_image(self, msg: Image) -> None:
        """Keep the latest colour frame; wake the prefetch while queried; hand it to ~/add_object goals that wait
        for frames."""
        self._frame = Frame(msg, self.get_clock().now().nanoseconds)
        self._frame_count += 1
        if self.params["prefetch_rate"] > 0 and time.monotonic() - self._last_query < PREFETCH_WHILE_QUERIED_S:
            self._prefetcher.wake()
        if not self.frame_jobs or not self.frame_jobs.waiting():
            return
        try:
            rgb, problem = image_to_rgb(msg, max_pixels=int(self.params["max_image_pixels"]), shrink_to=SHOT_SIDE), ""
        except ImageFormatError as err:
            rgb, problem = None, f"could not be read: {err}"
        if self.frame_jobs.offer(msg, {view: f.msg for view, f in self._views_latest.items()}, rgb, problem):
            self._learning.frames_ready()

    def _view_callback(self, view: str) -> Callable[[Image], None]:
        """A subscription callback that keeps the latest frame of one more view (depth, wrist camera)."""
        def keep(msg: Image) -> None:
            self._views_latest[view] = Frame(msg, self.get_clock().now().nanoseconds)
        return keep

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep the latest camera info."""
        self._camera_info = msg

    # ----- services -------------------------------------------------------------------------------------

    async def _on_is_graspable(self, request: IsGraspable.Request,
                               response: IsGraspable.Response) -> IsGraspable.Response:
        """Judge one object in the request's image or the latest camera frame; never raises."""
        start = time.perf_counter()
        self._stats.begin()
        try:
            model = self.require_model()
            name = request.object_name.strip()
            if not name:
                raise QueryError("object_name is empty: give the name of a known object (see ~/list_objects)")
            unregistered = self._check_names(model, [name])
            judged = await self._judge(model, request.image, [name], response)
            score, graspable = self._decide(judged.results[name])
            response.success, response.score, response.graspable = True, score, graspable
            response.frame_stamp, response.model_version = judged.stamp, judged.model_version
            response.location = judged.location(name)
            response.message = judged.note if not unregistered else \
                f"{judged.note}; zero-shot: {name!r} is not in the registry"
            self._publish_result(judged.stamp, judged.frame_id, [name], [score], [graspable], judged.model_version)
        except QueryError as err:
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self.get_logger().error(f"is_graspable({request.object_name!r}) failed: {type(err).__name__}: {err}")
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = f"inference failed: {type(err).__name__}: {err}"
            response.location = ObjectLocation()
        finally:
            self._stats.end(time.perf_counter() - start, bool(response.success))
        if not response.success:
            self.get_logger().debug(f"is_graspable({request.object_name!r}): {response.message}")
        return response

    async def _on_query_objects(self, request: QueryObjects.Request,
                                response: QueryObjects.Response) -> QueryObjects.Response:
        """Judge several objects (every known one when none are named) in one frame, one model pass; never raises."""
        start = time.perf_counter()
        self._stats.begin()
        try:
            model = self.require_model()
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
            decided = [self._decide(judged.results[name]) for name in names]
            response.names = names
            response.scores = [score for score, _ in decided]
            response.graspable = [graspable for _, graspable in decided]
            response.locations = [judged.location(name) for name in names]
            response.success, response.frame_stamp = True, judged.stamp
            response.model_version = judged.model_version
            response.message = judged.note if not unregistered else \
                f"{judged.note}; zero-shot: {', '.join(map(repr, unregistered))} not in the registry"
            self._publish_result(judged.stamp, judged.frame_id, names, list(response.scores),
                                 list(response.graspable), judged.model_version)
        except QueryError as err:
            response.success, response.message = False, str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self.get_logger().error(f"query_objects({list(request.object_names)!r}) failed: "
                                    f"{type(err).__name__}: {err}")
            response.success, response.message = False, f"inference failed: {type(err).__name__}: {err}"
        finally:
            if not response.success:
                response.names, response.scores, response.graspable, response.locations = [], [], [], []
            self._stats.end(time.perf_counter() - start, bool(response.success))
        return response

    def _decide(self, result: dict) -> tuple[float, bool]:
        """(score, graspable) of one model answer under the `threshold` parameter."""
        score, threshold = float(result["score"]), float(self.params["threshold"])
        return score, (bool(result["graspable"]) if threshold < 0 else score >= threshold)

    def _check_names(self, model: GraspModel, names: list[str]) -> list[str]:
        """The names that are not in the registry (QueryError for names it refuses, and for unknown names when
        known_objects_only is set)."""
        known = {known_name for known_name, _ in model.objects()}
        unregistered = [name for name in names if registry_name(name) not in known]
        if unregistered and self.params["known_objects_only"]:
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
            embedding = await self.in_worker(lambda: self._embed(model, self.model_input(model, image)))
            stamp, frame_id, size = image.header.stamp, image.header.frame_id, (image.width, image.height)
            note = f"request image, {image.width}x{image.height} {image.encoding}"
        else:
            self._last_query = time.monotonic()
            if self._frame is not None:
                response.frame_stamp = self._frame.msg.header.stamp
            now_ns = self.get_clock().now().nanoseconds
            entry = await self._query_embedding(model, now_ns)
            embedding, frame = entry.value, entry.meta["base_rgb"]
            msg = frame.msg
            stamp, frame_id, size = msg.header.stamp, msg.header.frame_id, (msg.width, msg.height)
            note = f"camera frame {self._age(frame, now_ns):.3f} s old, {msg.width}x{msg.height} {msg.encoding}"
        try:
            results = model.answer(embedding, names)[0]
        except ValueError as err:
            raise QueryError(str(err)) from err
        return Judged(results, stamp, frame_id, str(embedding.model_version), note, *size)

    async def in_worker(self, work: Callable[[], Any]) -> Any:
        """Run `work` on a model worker thread while the executor serves other callbacks; its result (or its
        exception) once done."""
        done = Future(executor=self.executor)
        done.add_done_callback(lambda _: None)  # completing it gives the executor a task: wakes it to resume here

        def finish(ran: WorkerFuture) -> None:
            try:
                done.set_result(ran.result())
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting callback (also a cancellation)
                done.set_exception(err)

        self._workers.submit(work).add_done_callback(finish)
        return await done

    @staticmethod
    def _embed(model: GraspModel, views: Any) -> GraspEmbedding:
        """The model's embedding of one observation (QueryError for an input it refuses)."""
        try:
            return model.embed(views)
        except ValueError as err:
            raise QueryError(str(err)) from err

    def _observation(self, model: GraspModel, now_ns: int) -> tuple[tuple, dict[str, Frame]]:
        """(cache key, {view: Frame}) of the latest fresh observation of every view the model reads; QueryError
        when a view has no fresh frame."""
        frames = {"base_rgb": self._fresh(self._frame, self._config["image_topic"], "camera", now_ns)}
        for view in model.views[1:]:
            frames[view] = self._fresh(self._views_latest.get(view), self._config[VIEW_TOPICS[view]], view, now_ns)
        key = observation_key(str(model.model_version),
                              [(view, _stamp_ns(f.msg), f.received_ns) for view, f in frames.items()])
        return key, frames

    def _fresh_enough(self, model: GraspModel, now_ns: int) -> Callable[[CacheEntry], bool]:
        """Whether a cached entry may answer a query now: same weights, every frame within max_frame_age."""
        version, limit = str(model.model_version), float(self.params["max_frame_age"])
        return lambda entry: entry.key[0] == version and (limit <= 0 or all(self._age(f, now_ns) <= limit
                                                                             for f in entry.meta.values()))

    async def _query_embedding(self, model: GraspModel, now_ns: int) -> CacheEntry:
        """The embedding a latest-frame query answers from: a cached one at once (see `_latest_embedding`), else
        the latest observation's, computed on a model worker."""
        key, _ = self._observation(model, now_ns)
        entry = self._embeddings.lookup(key, self._fresh_enough(model, now_ns),
                                        prefer_fallback=float(self.params["prefetch_rate"]) > 0)
        return entry if entry is not None else await self.in_worker(lambda: self._latest_embedding(model, now_ns))

    def _latest_embedding(self, model: GraspModel, now_ns: int | None = None, prefetch: bool = False
                          ) -> CacheEntry:
        """The cached embedding of the latest fresh observation (every view the model reads), computed here if
        missing (blocking: the prefetch thread and model workers call it). A query takes a fresh older
        observation's embedding instead of waiting while another computes the latest, and instead of computing
        at all when prefetch_rate > 0 (the prefetch embeds new frames); the prefetch (`prefetch`) always
        computes. entry.meta: {view: Frame} of the observation it embeds; QueryError when a view has no fresh
        frame or a frame cannot be read."""
        now_ns = self.get_clock().now().nanoseconds if now_ns is None else now_ns
        key, frames = self._observation(model, now_ns)

        def compute() -> GraspEmbedding:
            return self._embed(model, self.model_input(model, frames["base_rgb"].msg,
                                                  {view: f.msg for view, f in frames.items() if view != "base_rgb"}))

        entry, _ = self._embeddings.get(key, compute, frames,
                                        fallback=None if prefetch else self._fresh_enough(model, now_ns),
                                        prefer_fallback=float(self.params["prefetch_rate"]) > 0)
        return entry

    def _prefetch(self) -> None:
        """Embed the latest observation ahead of the queries (the prefetch thread, niced, at most prefetch_rate
        Hz, woken by new frames while latest-frame queries keep coming)."""
        model = self._model
        if model is None or self._state != "active":
            return
        try:
            self._latest_embedding(model, prefetch=True)
        except QueryError:
            pass  # no fresh frame yet, or one the model cannot read: the queries will say why
        except Exception as err:  # noqa: BLE001 - a bad frame must not stop prefetching
            self.get_logger().warning(f"prefetch: cannot embed the latest frame: {err}", throttle_duration_sec=10.0)

    def require_model(self) -> GraspModel:
        """The loaded model, or QueryError saying which lifecycle state the node is in."""
        model = self._model
        if self._state != "active" or model is None:
            raise QueryError(f"node is {self._state}, not active: activate it through its lifecycle "
                             f"({self.get_fully_qualified_name()}/change_state) to load the model")
        return model

    @property
    def image_topic(self) -> str:
        """The colour camera topic the node reads (configured; "" before configure)."""
        return str(self._config.get("image_topic", ""))

    def _fresh(self, frame: Frame | None, topic: str, what: str, now_ns: int | None = None) -> Frame:
        """Return `frame` if there is one and it is recent enough (at `now_ns`, default now), else QueryError."""
        if frame is None:
            raise QueryError(f"no {what} frame received yet on {topic} (QoS {self._config['image_reliability']}); "
                             "is the camera publishing?")
        age, limit = self._age(frame, now_ns), float(self.params["max_frame_age"])
        if limit > 0 and age > limit:
            raise QueryError(f"latest {what} frame on {topic} is {age:.2f} s old, older than max_frame_age "
                             f"{limit:.2f} s; is the camera still publishing?")
        return frame

    def _age(self, frame: Frame, now_ns: int | None = None) -> float:
        """Seconds since the frame's stamp (since its arrival when unstamped) at `now_ns` (default now), on the
        node clock."""
        stamp = frame.msg.header.stamp
        taken = stamp.sec * 1_000_000_000 + stamp.nanosec or frame.received_ns
        now = self.get_clock().now().nanoseconds if now_ns is None else now_ns
        return max(0.0, (now - taken) / 1e9)

    def model_input(self, model: GraspModel, msg: Image, extra: dict[str, Image] | None = None
               ) -> np.ndarray | dict[str, np.ndarray]:
        """The model's input: the colour frame `msg` as an RGB array, or a dict of every view the model stacks
        (other views from `extra`, else the latest fresh frame of their topic)."""
        side = int(self.params["image_size"]) or int(model.image_size or 0)
        limit = int(self.params["max_image_pixels"])
        views = model.views
        out = {}
        for view in views:
            if view == "base_rgb":
                view_msg = msg
            elif extra is not None and view in extra:
                view_msg = extra[view]
            else:
                view_msg = self._fresh(self._views_latest.get(view), self._config[VIEW_TOPICS[view]], view).msg
            convert = image_to_depth if view.endswith("_depth") else image_to_rgb
            try:
                out[view] = convert(view_msg, max_pixels=limit, shrink_to=side)
            except ImageFormatError as err:
                raise QueryError(f"{'image' if view == 'base_rgb' else view + ' frame'}: {err}") from err
        return out["base_rgb"] if views == ["base_rgb"] else out

    def _on_list_objects(self, request: ListObjects.Request, response: ListObjects.Response) -> ListObjects.Response:
        """Names and descriptions the model knows; empty while no model is loaded."""
        model = self._model
        if model is not None:
            objects = list(model.objects())
            response.names = [name for name, _ in objects]
            response.descriptions = [desc or "" for _, desc in objects]
            response.model_version = str(model.model_version)
        return response

    async def _on_remove_object(self, request: RemoveObject.Request,
                                response: RemoveObject.Response) -> RemoveObject.Response:
        """Forget an object ~/add_object taught (on a model worker: it writes the registry); refused, nothing
        changed and the reason in message, for any other name; never raises."""
        try:
            model = self.require_model()
            name = request.name.strip()
            if not name:
                raise QueryError("name is empty: give the name of an object ~/add_object taught")
            key = registry_name(name)
            response.model_version = str(await self.in_worker(lambda: model.remove_object(key)))
            response.success, response.message = True, f"removed {key!r}"
            self.get_logger().info(f"remove_object({key!r}): serving {response.model_version}")
        except (QueryError, ValueError, VlkdError) as err:  # NotRemovable, another writer holds the model dir
            response.success, response.message = False, str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self.get_logger().error(f"remove_object({request.name[:100]!r}) failed: {type(err).__name__}: {err}")
            response.success, response.message = False, f"remove_object failed: {type(err).__name__}: {err}"
        if not response.success and self._model is not None:
            response.model_version = str(self._model.model_version)
        return response

    # ----- publishing -----------------------------------------------------------------------------------

    def _publish_result(self, stamp: TimeMsg, frame_id: str, names: list[str], scores: list[float],
                        graspable: list[bool], model_version: str) -> None:
        """Publish one GraspResult on ~/results."""
        pub = self._results_pub
        if pub is None or self._state != "active":
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
        if float(self.params["results_rate"]) <= 0 or self._state != "active":
            return
        model, frame = self._model, self._frame
        if model is None or frame is None:
            return
        limit = float(self.params["max_frame_age"])
        names = [name for name, _ in model.objects()]
        if not names or (limit > 0 and self._age(frame) > limit):
            return
        try:
            entry = await self._query_embedding(model, self.get_clock().now().nanoseconds)
            result = model.answer(entry.value, names)[0]
        except Exception as err:  # noqa: BLE001 - a bad frame must not stop the timer
            self.get_logger().warning(f"results: cannot judge the latest frame: {err}",
                                      throttle_duration_sec=10.0)
            return
        msg = entry.meta["base_rgb"].msg
        scores, graspable = zip(*(self._decide(result[name]) for name in names))
        self._publish_result(msg.header.stamp, msg.header.frame_id, names, list(scores), list(graspable),
                             str(entry.value.model_version))
        if self.params["publish_debug_image"] and self._debug_pub is not None:
            try:
                rgb = image_to_rgb(msg, max_pixels=int(self.params["max_image_pixels"]),
                                   shrink_to=int(self.params["image_size"]) or int(model.image_size or 0))
            except ImageFormatError:
                return
            self._debug_pub.publish(numpy_to_image(annotate(rgb, names, scores, graspable), "rgb8",
                                                   msg.header.frame_id, msg.header.stamp))

    def _publish_diagnostics(self) -> None:
        """Publish model version, latency, frame age, camera rate and queue lengths on /diagnostics."""
        for job in self.frame_jobs.expire(str(self._config.get("image_topic"))):
            self.get_logger().warning(f"job {job.job_id} ({job.name!r}): {job.message}")
        array = DiagnosticArray(status=[diagnostic_status(self.report())])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def report(self) -> NodeReport:
        """The node's state, model, camera, query and job figures as /diagnostics publishes them."""
        count = self._frame_count
        rate = self._camera_rate.rate(count)
        latencies, counts = self._stats.snapshot()
        model, frame, info = self._model, self._frame, self._camera_info
        if self._paths is not None:  # resolved by configure; the state dir is where few-shot learning writes
            model_dir, state_dir = str(self._paths[0]), str(self._paths[1] or self._paths[0])
        else:  # unconfigured: the parameters as set
            model_dir, state_dir = str(self.params["model_dir"]), str(self.params["state_dir"])
        return NodeReport(
            name=self.get_fully_qualified_name().lstrip("/"), state=self._state, error=self._error,
            model_version=str(model.model_version) if model else None,
            objects=len(model.objects()) if model else 0, model_dir=model_dir, state_dir=state_dir,
            image_topic=self._config.get("image_topic", ""),
            frames_received=count, other_views=list(self._views_latest),
            camera_info=f"{info.width}x{info.height} {info.header.frame_id}" if info else "none",
            camera_rate_hz=rate, frame_age_s=self._age(frame) if frame else None,
            max_frame_age=float(self.params["max_frame_age"]), latencies=latencies, counts=counts,
            jobs_waiting=self.frame_jobs.waiting(), embeddings=self._embeddings.stats(),
            jobs_running=sum(1 for j in model.jobs() if j.state in ("queued", "running")) if model else 0)


def freeze_heap() -> None:
    """Exempt every object alive now (torch, the model: ~500k) from garbage collection: a full pass over them takes
    ~290 ms and a middle one ~1.5 ms on this VM, and either would otherwise land inside a query."""
    gc.collect()
    gc.freeze()


def _has_image(img: Image) -> bool:
    """Whether a request carries an image (width, height or data set) rather than 'use the camera'."""
    return img.width > 0 or img.height > 0 or len(img.data) > 0


def _stamp_ns(msg: Image) -> int:
    """A message's header stamp in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def model_paths(model_dir: str, state_dir: str) -> tuple[Path, Path | None]:
    """The grasp model dir and state dir (None: few-shot learning writes into the model dir) that the parameters
    model_dir and state_dir name, absolute, by the rules of `GraspFeasibility.from_checkpoint` ("" model_dir: the
    shipped default model); a VlkdError when there is no grasp model dir there. Reads the model card, loads nothing."""
    from vlkd_formats.model_dir import KIND_GRASP, read_card, resolve_model_dir
    from vlkd_ros.inference.model_paths import default_model_dir, state_dir_for

    root = resolve_model_dir(model_dir or default_model_dir()).resolve()
    read_card(root, KIND_GRASP)
    state = state_dir_for(root, state_dir)
    return root, state.resolve() if state is not None else None


def load_failure(model_dir: str, err: Exception) -> str:
    """The one-line reason a model dir (the parameter; "": the shipped default) could not be loaded."""
    where = repr(model_dir) if model_dir else "the shipped default model dir"
    return " ".join(f"cannot load the model from {where}: {type(err).__name__}: {err}".split())


def load_grasp_model(model_dir: Path, state_dir: Path | None, device: str, backend: str,
                     threads: int = 0) -> GraspModel:
    """Load the grasp-feasibility model of a model dir and state dir as `model_paths` resolved them, through the
    inference API."""
    from vlkd_ros.inference import GraspFeasibility

    return GraspFeasibility.from_checkpoint(model_dir, device=device, backend=backend, threads=threads,
                                            state_dir=state_dir)


def refuse_twin(node: LifecycleNode, wait_s: float = TWIN_WAIT_S) -> None:
    """StartError naming the node when the ROS graph shows another of its fully qualified name within `wait_s`
    (how far this check reaches: TWIN_WAIT_S)."""
    me = (node.get_name(), node.get_namespace())
    end = time.monotonic() + wait_s
    while node.get_node_names_and_namespaces().count(me) < 2:  # this node is one of them
        if time.monotonic() >= end:
            return
        time.sleep(TWIN_POLL_S)
    fqn = node.get_fully_qualified_name()
    raise StartError(f"a node named {fqn} is already running in ROS domain {node.context.get_domain_id()} "
                     f"(`ros2 node info {fqn}` shows it): stop it, or start this one under another name or "
                     "namespace (--ros-args -r __node:=NAME or -r __ns:=/NAMESPACE; launch: namespace:=/NAMESPACE)")


def run(node: PerceptionNode) -> int:
    """Spin `node` on a single-threaded executor (autostarting it if asked) until Ctrl-C or shutdown: its callbacks
    are short, and whatever runs the model for a query runs on a model worker meanwhile. StartError, before any
    callback ran, when a node of its name already runs; or when autostart cannot load the model dir."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        refuse_twin(node)
        if node.get_parameter("autostart").value:
            # as an executor task: the services answer from the start; a call that comes while activate loads the
            # model (2-3 s on this one thread) waits for it and is answered after
            started = executor.create_task(node.autostart, exit_on_load_error=True)
            executor.spin_until_future_complete(started)
            if started.done() and not started.result() and node.load_error:
                raise StartError(node.load_error)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Running callbacks (a query on the model, the results timer) must end before the node they use is
        # destroyed, and few-shot jobs must commit before the process exits: otherwise exit can crash.
        executor.shutdown(timeout_sec=SHUTDOWN_WAIT_S)
        node.release_model()
        node.destroy_node()
    return 0


def main(args: list[str] | None = None) -> int:
    """Console script `vlkd_perception`: init rclpy, run the node, shut down cleanly."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except Exception as err:  # noqa: BLE001 - bad parameter values: one clear line, not a traceback
        print(f"{NODE_NAME}: error: {err}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    try:
        return run(node)
    except StartError as err:
        print(f"{NODE_NAME}: error: {err}", file=sys.stderr, flush=True)
        return 2
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
