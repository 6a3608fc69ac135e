"""ROS 2 lifecycle node `vlkd_perception`: camera frames in, grasp-feasibility answers, results and diagnostics out.

It talks to the model only through `vlkd_ros.inference.GraspFeasibility`. Lifecycle: configure reads the
parameters and creates publishers, activate loads the model and subscribes to the camera, deactivate
unsubscribes and frees the model, cleanup destroys the publishers. `main()` configures and activates at
start when the `autostart` parameter is true (the default), so it also runs without a lifecycle manager; a
failed transition is logged and reported on /diagnostics, and the node stays up so it can be fixed and retried.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from vlkd_interfaces.msg import GraspResult
from vlkd_interfaces.srv import AddObject, GetJobStatus, IsGraspable, ListObjects
from vlkd_ros.ros.image_msgs import ImageFormatError, image_to_depth, image_to_rgb, numpy_to_image

NODE_NAME = "vlkd_perception"
EXECUTOR_THREADS = 6
LATENCY_WINDOW = 500
JOB_DRAIN_S = 60.0
RELIABILITIES = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# Model view -> the parameter naming its topic. A model stacks some of these views (GraspFeasibility.views).
VIEW_TOPICS = {"base_rgb": "image_topic", "base_depth": "depth_topic", "hand_rgb": "hand_image_topic",
               "hand_depth": "hand_depth_topic"}
BRIDGED_LOGGERS = ("vlkd_ros", "training")  # Python loggers of the model code, forwarded to the ROS logger

ModelLoader = Callable[[str, str, str], Any]


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, when a change takes effect, and its valid values."""

    name: str
    default: Any
    description: str
    when: str  # "runtime": applies at once; "configure": read in on_configure; "startup": read once by main()
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor rqt/`ros2 param describe` show, with ranges rclpy enforces."""
        note = {"runtime": "changeable at run time",
                "configure": "read in on_configure: change it while unconfigured (deactivate, cleanup, set, "
                             "configure, activate)",
                "startup": "read once at start"}[self.when]
        desc = ParameterDescriptor(name=self.name, description=f"{self.description} ({note})",
                                   read_only=self.when == "startup")
        if self.choices:
            desc.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.float_range:
            desc.floating_point_range = [FloatingPointRange(from_value=float(self.float_range[0]),
                                                            to_value=float(self.float_range[1]), step=0.0)]
        if self.int_range:
            desc.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=0)]
        return desc


PARAMETERS = (
    ParamSpec("model_dir", "", "grasp-feasibility model dir (model.json + safetensors) loaded on activate",
              "configure"),
    ParamSpec("device", "cpu", "torch device for the model, e.g. cpu or cuda:0", "configure"),
    ParamSpec("backend", "torch", "inference backend passed to GraspFeasibility.from_checkpoint", "configure"),
    ParamSpec("image_topic", "/camera/image_raw", "colour camera topic (sensor_msgs/Image)", "configure"),
    ParamSpec("depth_topic", "", "depth topic of the same camera (16UC1 mm or 32FC1 m), for models that stack "
              "base_depth; empty: none", "configure"),
    ParamSpec("hand_image_topic", "", "wrist camera colour topic, for models that stack hand_rgb; empty: none",
              "configure"),
    ParamSpec("hand_depth_topic", "", "wrist camera depth topic, for models that stack hand_depth; empty: none",
              "configure"),
    ParamSpec("camera_info_topic", "", "camera info topic (sensor_msgs/CameraInfo); empty: none", "configure"),
    ParamSpec("image_reliability", "best_effort", "QoS reliability of the camera subscriptions", "configure",
              choices=tuple(RELIABILITIES)),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", "startup",
              float_range=(0.1, 60.0)),
    ParamSpec("threshold", -1.0, "decision threshold: graspable = score >= threshold; -1: the model's own "
              "(calibrated) decision", "runtime", float_range=(-1.0, 1.0)),
    ParamSpec("max_frame_age", 1.0, "seconds after which the latest camera frame is too old to judge; 0: no limit",
              "runtime", float_range=(0.0, 3600.0)),
    ParamSpec("image_size", 0, "frames whose shorter side is larger are area-resized to this before the model; "
              "0: the model's input size", "runtime", int_range=(0, 8192)),
    ParamSpec("max_image_pixels", 3840 * 2160 * 2, "frames with more pixels are refused; 0: no limit", "runtime",
              int_range=(0, 2**31 - 1)),
    ParamSpec("known_objects_only", False, "refuse names that are not in the model's object registry (false: "
              "answer any name zero-shot, the model is open-vocabulary)", "runtime"),
    ParamSpec("results_rate", 1.0, "Hz at which the latest frame is judged for every known object and published "
              "on ~/results; 0: publish only the answers of ~/is_graspable", "runtime", float_range=(0.0, 30.0)),
    ParamSpec("publish_debug_image", False, "publish the judged frame with scores drawn on ~/debug_image",
              "runtime"),
    ParamSpec("max_fewshot_images", 50, "most images (or next frames) one ~/add_object call may use", "runtime",
              int_range=(1, 1000)),
    ParamSpec("fewshot_frame_timeout", 10.0, "seconds ~/add_object waits for its next camera frames", "runtime",
              float_range=(0.1, 600.0)),
    ParamSpec("autostart", True, "configure and activate at start (false: wait for a lifecycle manager)",
              "startup"),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


@dataclass
class Frame:
    """A received camera message, kept unconverted, with its arrival time on the node clock."""

    msg: Any
    received_ns: int


@dataclass
class FrameJob:
    """An ~/add_object call waiting for its next camera frames before the model's few-shot job starts."""

    job_id: str
    name: str
    description: str
    needed: int
    deadline: float
    frames: list = field(default_factory=list)
    extra: list = field(default_factory=list)  # per frame: {view: latest message} of the model's other views
    model_job: Any = None
    state: str = "queued"
    message: str = ""


class QueryError(Exception):
    """A query that cannot be answered; its text becomes the reply's message."""


class RosLogHandler(logging.Handler):
    """Forwards Python `logging` records (the inference API's) to a ROS logger; tracebacks only at debug."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        """Log the record's message (and its exception's one-line summary) at the matching ROS severity."""
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                err = record.exc_info[1]
                text += f": {type(err).__name__}: {err}"
                self.ros_logger.debug(logging.Formatter().formatException(record.exc_info))
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise into the model's threads
            self.handleError(record)


class PerceptionNode(LifecycleNode):
    """Answers "is object X graspable?" about the latest camera frame or a given image."""

    def __init__(self, model_loader: ModelLoader | None = None, **kwargs: Any) -> None:
        """Declare parameters and services; `model_loader(model_dir, device, backend)` replaces the real loader."""
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        self._load_model = model_loader or _load_grasp_model
        self._log_handler = RosLogHandler(self.get_logger())
        for name in BRIDGED_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._log_handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._params = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self._check_choices(self._params)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._state = "unconfigured"
        self._error = ""
        self._config: dict[str, Any] = {}
        self._model: Any = None
        self._model_lock = threading.Lock()
        self._frame: Frame | None = None
        self._views_latest: dict[str, Frame] = {}
        self._camera_info: CameraInfo | None = None
        self._frame_count = 0
        self._frame_jobs: dict[str, FrameJob] = {}
        self._jobs_lock = threading.Lock()
        self._model_jobs: dict[str, Any] = {}
        self._latencies: deque = deque(maxlen=LATENCY_WINDOW)
        self._stats = {"queries": 0, "failed": 0, "in_flight": 0}
        self._stats_lock = threading.Lock()
        self._rate_mark = (time.monotonic(), 0)
        self._last_results = 0.0
        self._subs: list = []
        self._results_pub = None
        self._debug_pub = None

        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._query_group = MutuallyExclusiveCallbackGroup()
        self._admin_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._results_group = MutuallyExclusiveCallbackGroup()
        request_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.create_service(IsGraspable, "~/is_graspable", self._on_is_graspable,
                            qos_profile=request_qos, callback_group=self._query_group)
        self.create_service(AddObject, "~/add_object", self._on_add_object, callback_group=self._admin_group)
        self.create_service(ListObjects, "~/list_objects", self._on_list_objects, callback_group=self._admin_group)
        self.create_service(GetJobStatus, "~/get_job_status", self._on_get_job_status,
                            callback_group=self._admin_group)
        self._frames_ready = self.create_guard_condition(self._start_frame_jobs, callback_group=self._admin_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(float(self._params["diagnostics_period"]), self._publish_diagnostics,
                                             callback_group=self._diag_group)
        self._results_timer = self.create_timer(1.0 / 30.0, self._on_results_tick,
                                                callback_group=self._results_group)

    def destroy_node(self) -> Any:
        """Detach the logging bridge, then destroy the node."""
        for name in BRIDGED_LOGGERS:
            logging.getLogger(name).removeHandler(self._log_handler)
            logging.getLogger(name).propagate = True
        return super().destroy_node()

    # ----- parameters -----------------------------------------------------------------------------------

    def parameter_values(self) -> dict[str, Any]:
        """The node's own parameters (not rclpy's built-in ones) as {name: value}."""
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    @staticmethod
    def _check_choices(values: dict[str, Any]) -> None:
        """Raise ValueError when a parameter with fixed choices has another value."""
        for name, value in values.items():
            spec = SPECS.get(name)
            if spec and spec.choices and value not in spec.choices:
                raise ValueError(f"parameter {name}={value!r} is not valid; valid: {', '.join(spec.choices)}")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Accept run-time changes, refuse configure-time ones unless unconfigured, check choices."""
        changes = {}
        for param in params:
            spec = SPECS.get(param.name)
            if spec is None:
                continue
            if spec.when == "configure" and self._state != "unconfigured":
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is read in on_configure and the node is {self._state}: deactivate and clean "
                    f"it up, set {param.name}, then configure and activate"))
            changes[param.name] = param.value
        try:
            self._check_choices(changes)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self._params.update(changes)
        for name, value in changes.items():
            self.get_logger().info(f"parameter {name} set to {value!r}")
        return SetParametersResult(successful=True)

    # ----- lifecycle ------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the configure-time parameters and create the publishers."""
        config = {spec.name: self._params[spec.name] for spec in PARAMETERS if spec.when == "configure"}
        if not config["model_dir"]:
            return self._fail("parameter model_dir is empty: set it to a grasp model dir "
                              "(model_dir in the params file, model_dir:=PATH or vlkd serve --model-dir PATH)")
        if not config["image_topic"]:
            return self._fail("parameter image_topic is empty: set it to the colour camera topic")
        self._config = config
        self._results_pub = self.create_lifecycle_publisher(GraspResult, "~/results", 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        self._state, self._error = "inactive", ""
        self.get_logger().info(f"configured: model_dir={config['model_dir']} device={config['device']} "
                               f"image_topic={config['image_topic']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and subscribe to the camera topics."""
        cfg = self._config
        start = time.monotonic()
        try:
            model = self._load_model(cfg["model_dir"], cfg["device"], cfg["backend"])
        except Exception as err:  # noqa: BLE001 - any load failure must leave the node inactive, not dead
            return self._fail(f"cannot load the model from {cfg['model_dir']!r}: {type(err).__name__}: {err}")
        try:
            views = model_views(model)
        except ValueError as err:
            return self._fail(str(err))
        missing = [f"{VIEW_TOPICS[v]} (for view {v})" for v in views if not cfg[VIEW_TOPICS[v]]]
        if missing:
            return self._fail(f"model {model.model_version} stacks views {views} but parameter(s) "
                              f"{', '.join(missing)} are empty: set them to the camera topics")
        with self._model_lock:
            self._model = model
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
        self._state, self._error = "active", ""
        names = [name for name, _ in model.objects()]
        self.get_logger().info(
            f"active: model {model.model_version} loaded in {time.monotonic() - start:.1f} s, {len(names)} objects, "
            f"camera {cfg['image_topic']} ({cfg['image_reliability']}), services "
            f"{self.get_fully_qualified_name()}/{{is_graspable,add_object,list_objects,get_job_status}}")
        return super().on_activate(state)

    def _fail(self, reason: str) -> TransitionCallbackReturn:
        """Log why a transition failed, keep it for /diagnostics, and return FAILURE."""
        self._error = reason
        self.get_logger().error(reason)
        return TransitionCallbackReturn.FAILURE

    def autostart(self) -> bool:
        """Configure and activate; on failure log how to recover and stay up in the state reached."""
        for step in (self.trigger_configure, self.trigger_activate):
            if step() != TransitionCallbackReturn.SUCCESS:
                self.get_logger().error(
                    f"autostart stopped: {step.__name__[len('trigger_'):]} failed; the node stays {self._state}. "
                    "Fix the parameters and drive the lifecycle (ros2 lifecycle set "
                    f"{self.get_fully_qualified_name()} configure / activate), or restart it")
                return False
        return True

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe from the camera and free the model."""
        self._state = "inactive"
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._frame = None
        self._views_latest = {}
        self._camera_info = None
        with self._jobs_lock:
            for job in self._frame_jobs.values():
                if job.model_job is None and job.state == "queued":
                    job.state, job.message = "failed", "the node was deactivated before the frames arrived"
        with self._model_lock:
            model, self._model = self._model, None
        self._drain_jobs(model)
        self._model_jobs.clear()
        self.get_logger().info("inactive: camera unsubscribed, model freed")
        return super().on_deactivate(state)

    def _drain_jobs(self, model: Any) -> None:
        """Let the model's running few-shot jobs commit to its registry before the model is dropped."""
        running = [job_id for job_id, job in self._model_jobs.items() if job.state in ("queued", "running")]
        close = getattr(model, "close", None)
        if close is None:
            return
        if running:
            self.get_logger().info(f"waiting up to {JOB_DRAIN_S:.0f} s for few-shot jobs {', '.join(running)} "
                                   "to finish so the object registry stays consistent")
        close(timeout=JOB_DRAIN_S)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers made in on_configure."""
        for pub in (self._results_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._results_pub = self._debug_pub = None
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and stop answering."""
        if self._state == "active":
            self.on_deactivate(state)
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    # ----- camera callbacks: store only, never run the model here -----------------------------------------

    def _on_image(self, msg: Image) -> None:
        """Keep the latest colour frame; hand it to ~/add_object calls that wait for frames."""
        frame = Frame(msg, self.get_clock().now().nanoseconds)
        self._frame = frame
        self._frame_count += 1
        if not self._frame_jobs:
            return
        ready = False
        with self._jobs_lock:
            for job in self._frame_jobs.values():
                if job.state == "queued" and job.model_job is None and len(job.frames) < job.needed:
                    job.frames.append(msg)
                    job.extra.append({view: f.msg for view, f in self._views_latest.items()})
                    ready |= len(job.frames) == job.needed
        if ready:
            self._frames_ready.trigger()

    def _view_callback(self, view: str) -> Callable[[Image], None]:
        """A subscription callback that keeps the latest frame of one more view (depth, wrist camera)."""
        def keep(msg: Image) -> None:
            self._views_latest[view] = Frame(msg, self.get_clock().now().nanoseconds)
        return keep

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep the latest camera info."""
        self._camera_info = msg

    # ----- services -------------------------------------------------------------------------------------

    def _on_is_graspable(self, request: IsGraspable.Request, response: IsGraspable.Response) -> IsGraspable.Response:
        """Judge one object in the request's image or the latest camera frame; never raises."""
        start = time.perf_counter()
        with self._stats_lock:
            self._stats["in_flight"] += 1
        try:
            name, result, stamp, note = self._judge(request, response)
            score, graspable = self._decide(result)
            response.success, response.score, response.graspable = True, score, graspable
            response.frame_stamp = stamp
            response.message = note
            self._publish_result(stamp, self._frame_id(request), [name], [score], [graspable])
        except QueryError as err:
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self.get_logger().error(f"is_graspable({request.object_name!r}) failed: {type(err).__name__}: {err}")
            response.success, response.graspable, response.score = False, False, 0.0
            response.message = f"inference failed: {type(err).__name__}: {err}"
        finally:
            elapsed = time.perf_counter() - start
            with self._stats_lock:
                self._stats["in_flight"] -= 1
                self._stats["queries"] += 1
                self._stats["failed"] += 0 if response.success else 1
                self._latencies.append(elapsed)
        if not response.success:
            self.get_logger().debug(f"is_graspable({request.object_name!r}): {response.message}")
        return response

    def _frame_id(self, request: IsGraspable.Request) -> str:
        """The frame_id of the image a request was judged on."""
        if _has_image(request.image):
            return request.image.header.frame_id
        return self._frame.msg.header.frame_id if self._frame else ""

    def _decide(self, result: dict) -> tuple[float, bool]:
        """(score, graspable) of one model answer under the `threshold` parameter."""
        score, threshold = float(result["score"]), float(self._params["threshold"])
        return score, (bool(result["graspable"]) if threshold < 0 else score >= threshold)

    def _judge(self, request: IsGraspable.Request,
               response: IsGraspable.Response) -> tuple[str, dict, TimeMsg, str]:
        """Return (name, model answer, frame stamp, note) or raise QueryError with what was wrong."""
        model = self._require_model()
        name = request.object_name.strip()
        if not name:
            raise QueryError("object_name is empty: give the name of a known object (see ~/list_objects)")
        known = [known_name for known_name, _ in model.objects()]
        registered = canonical_name(name) in known
        if not registered and self._params["known_objects_only"]:
            raise QueryError(f"unknown object {name!r}; known objects: {', '.join(known) or 'none'}; "
                             "teach it with ~/add_object (or set known_objects_only to false for zero-shot)")
        if _has_image(request.image):
            if model_views(model) != ["base_rgb"]:
                raise QueryError(f"model {model.model_version} stacks views {model_views(model)}; a request image "
                                 "gives only base_rgb: leave image empty to judge the cameras' latest frames")
            msg, stamp, note = request.image, request.image.header.stamp, "request image"
        else:
            if self._frame is not None:
                response.frame_stamp = self._frame.msg.header.stamp
            frame = self._fresh(self._frame, self._config["image_topic"], "camera")
            msg, stamp = frame.msg, frame.msg.header.stamp
            note = f"camera frame {self._age(frame):.3f} s old"
        views = self._views(model, msg)
        with self._model_lock:
            if self._model is not model:
                raise QueryError("the model was unloaded while the query waited (node deactivated)")
            try:
                result = model.query(views, [name])[0][name]
            except ValueError as err:
                raise QueryError(str(err)) from err
        note = f"{note}, {msg.width}x{msg.height} {msg.encoding}"
        return name, result, stamp, note if registered else f"{note}; zero-shot: {name!r} is not in the registry"

    def _require_model(self) -> Any:
        """The loaded model, or QueryError saying which lifecycle state the node is in."""
        model = self._model
        if self._state != "active" or model is None:
            raise QueryError(f"node is {self._state}, not active: activate it through its lifecycle "
                             f"({self.get_fully_qualified_name()}/change_state) to load the model")
        return model

    def _fresh(self, frame: Frame | None, topic: str, what: str) -> Frame:
        """Return `frame` if there is one and it is recent enough, else raise QueryError."""
        if frame is None:
            raise QueryError(f"no {what} frame received yet on {topic} (QoS {self._config['image_reliability']}); "
                             "is the camera publishing?")
        age, limit = self._age(frame), float(self._params["max_frame_age"])
        if limit > 0 and age > limit:
            raise QueryError(f"latest {what} frame on {topic} is {age:.2f} s old, older than max_frame_age "
                             f"{limit:.2f} s; is the camera still publishing?")
        return frame

    def _age(self, frame: Frame) -> float:
        """Seconds since the frame's stamp (since its arrival when unstamped), on the node clock."""
        stamp = frame.msg.header.stamp
        taken = stamp.sec * 1_000_000_000 + stamp.nanosec or frame.received_ns
        return max(0.0, (self.get_clock().now().nanoseconds - taken) / 1e9)

    def _views(self, model: Any, msg: Image, extra: dict[str, Image] | None = None) -> Any:
        """The model's input: the colour frame `msg` as an RGB array, or a dict of every view the model stacks
        (other views from `extra`, else the latest fresh frame of their topic)."""
        side = int(self._params["image_size"]) or int(getattr(model, "image_size", 0) or 0)
        limit = int(self._params["max_image_pixels"])
        views = model_views(model)
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

    def _on_add_object(self, request: AddObject.Request, response: AddObject.Response) -> AddObject.Response:
        """Start a few-shot job from the given images or the next camera frames; answers at once."""
        try:
            model = self._require_model()
            name = request.name.strip()
            if not name:
                raise QueryError("name is empty: give the new object's name")
            take, images = int(request.take_next_frames), list(request.images)
            limit = int(self._params["max_fewshot_images"])
            if take and images:
                raise QueryError(f"give either images ({len(images)} given) or take_next_frames ({take}), not both")
            if not take and not images:
                raise QueryError("give example images or take_next_frames > 0")
            if max(take, len(images)) > limit:
                raise QueryError(f"{max(take, len(images))} images asked for; the limit is {limit} "
                                 "(parameter max_fewshot_images)")
            description = request.description.strip()
            if take:
                job = self._queue_frame_job(name, description, take)
                response.job_id = job.job_id
                response.message = f"collecting the next {take} frames from {self._config['image_topic']}"
            else:
                if model_views(model) != ["base_rgb"]:
                    raise QueryError(f"model {model.model_version} stacks views {model_views(model)}: use "
                                     "take_next_frames to take them from the cameras")
                views = []
                for i, img in enumerate(images):
                    try:
                        views.append(self._views(model, img))
                    except QueryError as err:
                        raise QueryError(f"images[{i}]: {err}") from err
                job = self._start_model_job(model, name, description, views)
                response.job_id = job.job_id
                response.message = f"few-shot job started with {len(views)} images"
            response.accepted = True
            self.get_logger().info(f"add_object({name!r}): job {response.job_id}: {response.message}")
        except QueryError as err:
            response.accepted, response.message = False, str(err)
        except ValueError as err:
            response.accepted, response.message = False, str(err)
        except Exception as err:  # noqa: BLE001
            self.get_logger().error(f"add_object({request.name!r}) failed: {type(err).__name__}: {err}")
            response.accepted, response.message = False, f"add_object failed: {type(err).__name__}: {err}"
        return response

    def _queue_frame_job(self, name: str, description: str, take: int) -> FrameJob:
        """Register a job that starts once `take` more camera frames have arrived."""
        job = FrameJob(job_id=f"frames-{uuid.uuid4().hex[:12]}", name=name, description=description, needed=take,
                       deadline=time.monotonic() + float(self._params["fewshot_frame_timeout"]))
        with self._jobs_lock:
            self._frame_jobs[job.job_id] = job
        return job

    def _start_model_job(self, model: Any, name: str, description: str, views: list) -> Any:
        """Call the model's add_object and remember the job it returns."""
        job = model.add_object(name, views, description=description or None, k=len(views))
        self._model_jobs[job.job_id] = job
        return job

    def _start_frame_jobs(self) -> None:
        """Start the model jobs of ~/add_object calls whose frames have all arrived (guard-condition callback)."""
        with self._jobs_lock:
            ready = [job for job in self._frame_jobs.values()
                     if job.state == "queued" and job.model_job is None and len(job.frames) >= job.needed]
        for job in ready:
            try:
                model = self._require_model()
                views = [self._views(model, msg, extra) for msg, extra in zip(job.frames, job.extra)]
                job.model_job = self._start_model_job(model, job.name, job.description, views)
                job.frames, job.extra = [], []
            except (QueryError, ValueError) as err:
                job.state, job.message = "failed", str(err)
            except Exception as err:  # noqa: BLE001
                job.state, job.message = "failed", f"add_object failed: {type(err).__name__}: {err}"
            if job.state == "failed":
                self.get_logger().error(f"job {job.job_id} ({job.name!r}) failed: {job.message}")

    def _on_list_objects(self, request: ListObjects.Request, response: ListObjects.Response) -> ListObjects.Response:
        """Names and descriptions the model knows; empty while no model is loaded."""
        model = self._model
        if model is not None:
            objects = list(model.objects())
            response.names = [name for name, _ in objects]
            response.descriptions = [desc or "" for _, desc in objects]
            response.model_version = str(model.model_version)
        return response

    def _on_get_job_status(self, request: GetJobStatus.Request,
                           response: GetJobStatus.Response) -> GetJobStatus.Response:
        """State of an ~/add_object job."""
        job_id = request.job_id
        with self._jobs_lock:
            frame_job = self._frame_jobs.get(job_id)
        model_job = frame_job.model_job if frame_job else self._model_jobs.get(job_id)
        if model_job is None and frame_job is None and self._model is not None:
            model_job = self._model.job(job_id)
        if model_job is not None:
            response.found, response.state = True, str(model_job.state)
            response.progress, response.message = float(model_job.progress), str(model_job.message)
        elif frame_job is not None:
            response.found, response.state, response.message = True, frame_job.state, frame_job.message or (
                f"collecting camera frames: {len(frame_job.frames)}/{frame_job.needed}")
        else:
            response.message = f"no job {job_id!r}"
        return response

    # ----- publishing -----------------------------------------------------------------------------------

    def _publish_result(self, stamp: TimeMsg, frame_id: str, names: list[str], scores: list[float],
                        graspable: list[bool]) -> None:
        """Publish one GraspResult on ~/results."""
        pub, model = self._results_pub, self._model
        if pub is None or self._state != "active":
            return
        msg = GraspResult()
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        msg.names, msg.scores = list(names), [float(s) for s in scores]
        msg.graspable = [bool(g) for g in graspable]
        msg.model_version = str(model.model_version) if model is not None else ""
        pub.publish(msg)

    def _on_results_tick(self) -> None:
        """At `results_rate`, judge the latest fresh frame for every known object and publish it."""
        rate = float(self._params["results_rate"])
        now = time.monotonic()
        if rate <= 0 or now - self._last_results < 1.0 / rate or self._state != "active":
            return
        model, frame = self._model, self._frame
        if model is None or frame is None:
            return
        limit = float(self._params["max_frame_age"])
        names = [name for name, _ in model.objects()]
        if not names or (limit > 0 and self._age(frame) > limit):
            return
        self._last_results = now
        try:
            views = self._views(model, frame.msg)
            with self._model_lock:
                if self._model is not model:
                    return
                result = model.query(views, names)[0]
        except Exception as err:  # noqa: BLE001 - a bad frame must not stop the timer
            self.get_logger().warning(f"results: cannot judge the latest frame: {err}",
                                      throttle_duration_sec=10.0)
            return
        scores, graspable = zip(*(self._decide(result[name]) for name in names))
        self._publish_result(frame.msg.header.stamp, frame.msg.header.frame_id, names, list(scores), list(graspable))
        if self._params["publish_debug_image"] and self._debug_pub is not None:
            rgb = views["base_rgb"] if isinstance(views, dict) else views
            self._debug_pub.publish(numpy_to_image(annotate(rgb, names, scores, graspable), "rgb8",
                                                   frame.msg.header.frame_id, frame.msg.header.stamp))

    def _publish_diagnostics(self) -> None:
        """Publish model version, latency, frame age, camera rate and queue lengths on /diagnostics."""
        self._expire_frame_jobs()
        now = time.monotonic()
        count = self._frame_count
        then, before = self._rate_mark
        self._rate_mark = (now, count)
        rate = (count - before) / (now - then) if now > then else 0.0
        with self._stats_lock:
            lat = sorted(self._latencies)
            stats = dict(self._stats)
        model, frame = self._model, self._frame
        age = self._age(frame) if frame else float("nan")
        with self._jobs_lock:
            waiting = sum(1 for j in self._frame_jobs.values() if j.state == "queued" and j.model_job is None)
        running = sum(1 for j in self._model_jobs.values() if j.state in ("queued", "running"))
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name().lstrip('/')}: grasp feasibility",
                                  hardware_id=str(model.model_version) if model else "no model")
        limit = float(self._params["max_frame_age"])
        if self._error:
            status.level, status.message = DiagnosticStatus.ERROR, f"node {self._state}: {self._error}"
        elif self._state != "active":
            status.level, status.message = DiagnosticStatus.WARN, f"node {self._state}"
        elif frame is None:
            status.level, status.message = DiagnosticStatus.WARN, f"no frame yet on {self._config['image_topic']}"
        elif limit > 0 and age > limit:
            status.level, status.message = DiagnosticStatus.WARN, f"camera frame {age:.1f} s old"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        values = {
            "state": self._state,
            "model_version": str(model.model_version) if model else "",
            "model_dir": self._config.get("model_dir", ""),
            "image_topic": self._config.get("image_topic", ""),
            "objects": len(model.objects()) if model else 0,
            "frames_received": count,
            "other_views": ", ".join(sorted(self._views_latest)) or "none",
            "camera_info": (f"{self._camera_info.width}x{self._camera_info.height} {self._camera_info.header.frame_id}"
                            if self._camera_info else "none"),
            "camera_rate_hz": round(rate, 2),
            "frame_age_s": round(age, 3),
            "latency_p50_ms": round(1000 * _percentile(lat, 50), 2),
            "latency_p95_ms": round(1000 * _percentile(lat, 95), 2),
            "queries_total": stats["queries"],
            "queries_failed": stats["failed"],
            "queries_in_flight": stats["in_flight"],
            "jobs_waiting_for_frames": waiting,
            "jobs_running": running,
        }
        status.values = [KeyValue(key=k, value=json.dumps(v) if not isinstance(v, str) else v)
                         for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _expire_frame_jobs(self) -> None:
        """Fail ~/add_object jobs whose frames did not come in time."""
        now = time.monotonic()
        with self._jobs_lock:
            for job in self._frame_jobs.values():
                if job.state == "queued" and job.model_job is None and now > job.deadline \
                        and len(job.frames) < job.needed:
                    job.state = "failed"
                    job.message = (f"only {len(job.frames)} of {job.needed} frames arrived on "
                                   f"{self._config.get('image_topic')} within fewshot_frame_timeout")
                    job.frames, job.extra = [], []
                    self.get_logger().warning(f"job {job.job_id} ({job.name!r}): {job.message}")


def model_views(model: Any) -> list[str]:
    """Views the model stacks, base_rgb first (older APIs: base_rgb, plus base_depth when it needs depth)."""
    views = list(getattr(model, "views", None) or (["base_rgb", "base_depth"] if model.needs_depth else ["base_rgb"]))
    unknown = [v for v in views if v not in VIEW_TOPICS]
    if unknown or views[0] != "base_rgb":
        raise ValueError(f"model views {views} are not supported; the node serves {list(VIEW_TOPICS)} with base_rgb "
                         "first")
    return views


def canonical_name(name: str) -> str:
    """An object name as the registry spells it: '_' as space, single spaces, lower case."""
    return " ".join(name.replace("_", " ").split()).lower()


def _has_image(img: Image) -> bool:
    """Whether a request carries an image (width, height or data set) rather than 'use the camera'."""
    return img.width > 0 or img.height > 0 or len(img.data) > 0


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    return float(np.percentile(sorted_values, q))


def annotate(rgb: np.ndarray, names: list[str], scores: list[float], graspable: list[bool]) -> np.ndarray:
    """Return a copy of the frame with one line per object (name, score; green if graspable, red if not)."""
    try:
        import cv2
    except ImportError:  # without OpenCV the debug image is the bare frame
        return rgb.copy()
    out = np.ascontiguousarray(rgb.copy())
    scale = max(0.35, out.shape[0] / 600)
    for i, (name, score, ok) in enumerate(zip(names, scores, graspable)):
        colour = (40, 200, 40) if ok else (220, 40, 40)
        y = int((i + 1) * 22 * scale)
        cv2.putText(out, f"{name}: {score:.2f}", (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour,
                    max(1, int(2 * scale)), cv2.LINE_AA)
    return out


def _load_grasp_model(model_dir: str, device: str, backend: str) -> Any:
    """Load the grasp-feasibility model through the inference API."""
    from vlkd_ros.inference import GraspFeasibility

    return GraspFeasibility.from_checkpoint(model_dir, device=device, backend=backend)


def run(node: PerceptionNode) -> int:
    """Autostart if asked, then spin `node` on a multi-threaded executor until Ctrl-C or shutdown."""
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            node.autostart()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    return 0


def main(args: list[str] | None = None) -> int:
    """Console script `vlkd_perception`: init rclpy, run the node, shut down cleanly."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except Exception as err:  # noqa: BLE001 - bad parameter values: one clear line, not a traceback
        print(f"{NODE_NAME}: error: {err}", flush=True)
        rclpy.try_shutdown()
        return 2
    try:
        return run(node)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
