"""ROS 2 lifecycle node `vlkd_perception`: camera frames in, grasp-feasibility answers, results and diagnostics out.

The node class: its parameters, lifecycle, camera frames, model and model workers, and `run`/`main`. Its questions
live in `queries`, object learning in `object_learning`, what it publishes in `publishers`, what starting it needs
in `startup`; it reaches the model only as a `GraspModel`.
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
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image

from vlkd_ros.ros import log_bridge
from vlkd_ros.ros.diagnostics import NodeReport, RateMeter
from vlkd_ros.ros.frame_cache import observation_key
from vlkd_ros.ros.frame_jobs import FrameJobs
from vlkd_ros.ros.image_msgs import ImageFormatError, image_to_depth, image_to_rgb
from vlkd_ros.ros.object_learning import ObjectLearning
from vlkd_ros.ros.parameters import (PARAMETERS, RELIABILITIES, VIEW_TOPICS, accepted_changes, check_choices,
                                     configure_values, served_views)
from vlkd_ros.ros.publishers import Publishers
from vlkd_ros.ros.queries import QueryServices
from vlkd_ros.ros.requests import QueryError
from vlkd_ros.ros.startup import StartError, load_failure, load_grasp_model, model_paths, refuse_twin

if TYPE_CHECKING:  # importing vlkd_ros.inference loads torch: done only when the model is loaded (on activate)
    from vlkd_ros.inference.protocol import GraspModel

NODE_NAME = "vlkd_perception"
MODEL_WORKERS = 2  # threads that run the model for queries (request images, a missing embedding): two at once
JOB_DRAIN_S = 60.0
SHUTDOWN_WAIT_S = 10.0  # how long Ctrl-C waits for running callbacks before their node is destroyed
SHOT_SIDE = 128  # take_next_frames: frames are judged (flat, noise, near-duplicate) at most this big


@dataclass
class Frame:
    """A received camera message, kept unconverted, with its arrival time on the node clock."""

    msg: Image
    received_ns: int


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
        # `run` spins the node on one thread: every callback is short (frames are only stored, queries answer from
        # cached embeddings); whatever runs the model for a query awaits a model worker (`in_worker`) while the
        # executor goes on. The groups keep the node correct under a multi-threaded executor too: frames in their
        # own group, queries reentrant, each reading the cached embedding of the observation it judges.
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._admin_group = MutuallyExclusiveCallbackGroup()
        # before the parameter checks: destroy_node() (also after a refused parameter) stops them
        self.queries = QueryServices(self, ReentrantCallbackGroup(), self._admin_group)
        self._learning = ObjectLearning(self, self._admin_group)
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
        self._camera_rate = RateMeter()
        self._subs: list = []
        self.publishing = Publishers(self)

    def destroy_node(self) -> Any:
        """Stop the prefetch thread and the model workers, detach the logging bridge, then destroy the node."""
        self.queries.prefetcher.stop()
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
            self.publishing.schedule_results()
        return SetParametersResult(successful=True)

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
        self.publishing.create_lifecycle_publishers()
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
            self.queries.embeddings.clear()
            self._model = model
        freeze_heap()
        self.queries.prefetcher.start()
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
            f"active: model {model.model_version} ({model.backend}) loaded in {time.monotonic() - start:.1f} s, "
            f"{len(names)} objects, "
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
        self.queries.prefetcher.stop()
        with self._model_lock:
            model, self._model = self._model, None
            self.queries.embeddings.clear()
        self._drain_jobs(model)
        del model  # the last reference; the model's objects hold reference cycles, so only a collection frees them
        gc.unfreeze()
        gc.collect()  # now, not at the next full collection (maybe never while inactive): ~110 MB after a job
        from vlkd_ros.inference.heap import trim_heap  # loaded with the model (vlkd_ros.inference), here since then

        trim_heap()

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
        self.publishing.destroy_lifecycle_publishers()
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
        self.queries.frame_arrived()
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

    # ----- the model, its workers, the frames it judges ---------------------------------------------------

    @property
    def model(self) -> GraspModel | None:
        """The loaded model (None unless active)."""
        return self._model

    @property
    def state(self) -> str:
        """The lifecycle state: unconfigured, inactive, active or finalized."""
        return self._state

    @property
    def frame(self) -> Frame | None:
        """The latest colour camera frame (None before the first since activation)."""
        return self._frame

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

    def observation(self, model: GraspModel, now_ns: int) -> tuple[tuple, dict[str, Frame]]:
        """(cache key, {view: Frame}) of the latest fresh observation of every view the model reads; QueryError
        when a view has no fresh frame."""
        frames = {"base_rgb": self._fresh(self._frame, self._config["image_topic"], "camera", now_ns)}
        for view in model.views[1:]:
            frames[view] = self._fresh(self._views_latest.get(view), self._config[VIEW_TOPICS[view]], view, now_ns)
        key = observation_key(str(model.model_version),
                              [(view, _stamp_ns(f.msg), f.received_ns) for view, f in frames.items()])
        return key, frames

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
        age, limit = self.age(frame, now_ns), float(self.params["max_frame_age"])
        if limit > 0 and age > limit:
            raise QueryError(f"latest {what} frame on {topic} is {age:.2f} s old, older than max_frame_age "
                             f"{limit:.2f} s; is the camera still publishing?")
        return frame

    def age(self, frame: Frame, now_ns: int | None = None) -> float:
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

    # ----- what /diagnostics says --------------------------------------------------------------------------

    def report(self) -> NodeReport:
        """The node's state, model, camera, query and job figures as /diagnostics publishes them."""
        count = self._frame_count
        rate = self._camera_rate.rate(count)
        latencies, counts = self.queries.stats.snapshot()
        model, frame, info = self._model, self._frame, self._camera_info
        if self._paths is not None:  # resolved by configure; the state dir is where few-shot learning writes
            model_dir, state_dir = str(self._paths[0]), str(self._paths[1] or self._paths[0])
        else:  # unconfigured: the parameters as set
            model_dir, state_dir = str(self.params["model_dir"]), str(self.params["state_dir"])
        return NodeReport(
            name=self.get_fully_qualified_name().lstrip("/"), state=self._state, error=self._error,
            model_version=str(model.model_version) if model else None, backend=model.backend if model else "",
            objects=len(model.objects()) if model else 0, model_dir=model_dir, state_dir=state_dir,
            image_topic=self._config.get("image_topic", ""),
            frames_received=count, other_views=list(self._views_latest),
            camera_info=f"{info.width}x{info.height} {info.header.frame_id}" if info else "none",
            camera_rate_hz=rate, frame_age_s=self.age(frame) if frame else None,
            max_frame_age=float(self.params["max_frame_age"]), latencies=latencies, counts=counts,
            jobs_waiting=self.frame_jobs.waiting(), embeddings=self.queries.embeddings.stats(),
            jobs_running=sum(1 for j in model.jobs() if j.state in ("queued", "running")) if model else 0)


def freeze_heap() -> None:
    """Exempt every object alive now (torch, the model: ~500k) from garbage collection: a full pass over them takes
    ~290 ms and a middle one ~1.5 ms on this VM, and either would otherwise land inside a query."""
    gc.collect()
    gc.freeze()


def _stamp_ns(msg: Image) -> int:
    """A message's header stamp in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


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
