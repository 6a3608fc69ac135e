"""The node's object learning: the action `~/add_object` (vlkd_interfaces/action/AddObject), whose goal teaches the
model one object from its images (each with an optional region of interest) or from the next distinct camera frames,
reports its stage, progress and distinct frames as feedback, and ends with the model version serving after it
(cancelling the goal cancels its job, which then changes nothing; a refusal aborts the goal at once, saying why);
and the service `~/remove_object`, which undoes a taught object."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rclpy.action import ActionServer, CancelResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.task import Future
from sensor_msgs.msg import Image, RegionOfInterest

from vlkd_formats.errors import VlkdError
from vlkd_formats.object_registry import normalize_description
from vlkd_interfaces.action import AddObject
from vlkd_interfaces.srv import RemoveObject
from vlkd_ros.ros.frame_jobs import FrameJob
from vlkd_ros.ros.requests import QueryError, registry_name

if TYPE_CHECKING:  # importing vlkd_ros.inference loads the model's libraries: done only when the model is loaded
    from vlkd_ros.inference.protocol import GraspJob, GraspModel
    from vlkd_ros.ros.perception_node import PerceptionNode

FEEDBACK_PERIOD_S = 0.2  # how often a goal's feedback is refreshed (and a cancel or a deactivation noticed)
ACTIVE = ("queued", "running")


class ObjectLearning:
    """`~/add_object` and `~/remove_object` of a PerceptionNode: checks each goal, starts its few-shot job (from the
    goal's images on a model worker, or once its distinct camera frames arrived), follows it with feedback and ends
    the goal with the job's outcome. It reads the node's `params`, `model`, `frame_jobs`, `require_model`,
    `in_worker`, `model_input` and `image_topic`."""

    def __init__(self, node: PerceptionNode, callback_group: Any) -> None:
        """Create the action server, its feedback timer (running only while goals run), the guard condition the
        camera callback triggers when a goal has all its frames, and ~/remove_object."""
        self._node = node
        self._waiting: list[Future] = []
        self._goals = 0
        self._timer = node.create_timer(FEEDBACK_PERIOD_S, self._wake, callback_group=callback_group)
        self._timer.cancel()
        self._frames_ready = node.create_guard_condition(self._wake, callback_group=callback_group)
        self._server = ActionServer(node, AddObject, "~/add_object", self._execute, callback_group=callback_group,
                                    cancel_callback=self._on_cancel)
        node.create_service(RemoveObject, "~/remove_object", self.on_remove_object, callback_group=callback_group)

    def destroy(self) -> None:
        """Destroy the action server (before its node)."""
        self._server.destroy()

    def frames_ready(self) -> None:
        """Wake the goals now: one of them has all its camera frames (thread-safe)."""
        self._frames_ready.trigger()

    async def on_remove_object(self, request: RemoveObject.Request,
                               response: RemoveObject.Response) -> RemoveObject.Response:
        """Forget an object ~/add_object taught (on a model worker: it writes the registry); refused, nothing
        changed and the reason in message, for any other name; never raises."""
        try:
            model = self._node.require_model()
            name = request.name.strip()
            if not name:
                raise QueryError("name is empty: give the name of an object ~/add_object taught")
            key = registry_name(name)
            response.model_version = str(await self._node.in_worker(lambda: model.remove_object(key)))
            response.success, response.message = True, f"removed {key!r}"
            self._node.get_logger().info(f"remove_object({key!r}): serving {response.model_version}")
        except (QueryError, ValueError, VlkdError) as err:  # NotRemovable, another writer holds the model dir
            response.success, response.message = False, str(err)
        except Exception as err:  # noqa: BLE001 - a service must answer, whatever the model does
            self._node.get_logger().error(f"remove_object({request.name[:100]!r}) failed: "
                                          f"{type(err).__name__}: {err}")
            response.success, response.message = False, f"remove_object failed: {type(err).__name__}: {err}"
        if not response.success and self._node.model is not None:
            response.model_version = str(self._node.model.model_version)
        return response

    def _on_cancel(self, goal: ServerGoalHandle) -> CancelResponse:
        """Accept every cancel: the goal's job is cancelled at its next step (one that is committing succeeds)."""
        self._wake()
        return CancelResponse.ACCEPT

    def _wake(self) -> None:
        """Resume every goal waiting for its next step (timer, guard condition and cancel callback)."""
        waiting, self._waiting = self._waiting, []
        for wake in waiting:
            wake.set_result(None)

    async def _next_step(self) -> None:
        """Wait FEEDBACK_PERIOD_S, or less when frames arrive or a cancel comes."""
        wake = Future(executor=self._node.executor)
        wake.add_done_callback(lambda _: None)  # completing it gives the executor a task: wakes it to resume here
        self._waiting.append(wake)
        await wake

    async def _execute(self, goal: ServerGoalHandle) -> AddObject.Result:
        """Run one goal to its end: refused or failed (aborted, saying why), succeeded, or cancelled."""
        node, request = self._node, goal.request
        self._goals += 1
        if self._goals == 1:
            self._timer.reset()
        model = None
        try:
            model = node.require_model()
            key, description = self.check(model, request)
            if request.take_next_frames:
                frame_job = node.frame_jobs.queue(key, description, int(request.take_next_frames),
                                                  float(node.params["fewshot_frame_timeout"]))
                node.get_logger().info(f"add_object({key!r}): collecting the next {request.take_next_frames} "
                                       f"distinct frames from {node.image_topic}")
                job = await self._collect(goal, model, frame_job)
                if job is None:
                    return self._end(goal, frame_job.state, frame_job.message, model)
                frames = frame_job.needed
            else:
                images, rois, frames = list(request.images), list(request.rois), 0
                job = await node.in_worker(lambda: self.start_from_images(model, key, description, images, rois))
                node.get_logger().info(f"add_object({key!r}): job {job.job_id} started with {len(images)} images")
            return await self._follow(goal, model, job, frames)
        except (QueryError, ValueError, VlkdError) as err:  # VlkdError: e.g. another writer holds the model dir
            return self._end(goal, "failed", str(err), model, refused=True)
        except Exception as err:  # noqa: BLE001 - a goal must end with a result, whatever the model does
            node.get_logger().error(f"add_object({request.name[:100]!r}) failed: {type(err).__name__}: {err}")
            return self._end(goal, "failed", f"add_object failed: {type(err).__name__}: {err}", model)
        finally:
            self._goals -= 1
            if not self._goals:
                self._timer.cancel()

    def check(self, model: GraspModel, request: AddObject.Goal) -> tuple[str, str]:
        """(registry name, description) of a goal the node may start, or QueryError saying why not: a name or
        description the registry refuses, images and take_next_frames both or neither, too few or too many shots,
        rois that do not match the images, a job for that name already running, a full job queue."""
        name = request.name.strip()
        if not name:
            raise QueryError("name is empty: give the new object's name")
        key = registry_name(name)
        try:
            description = normalize_description(request.description)
        except ValueError as err:
            raise QueryError(str(err)) from err
        params = self._node.params
        take, images, rois = int(request.take_next_frames), list(request.images), list(request.rois)
        limit, least = int(params["max_fewshot_images"]), int(params["fewshot_min_shots"])
        if take and images:
            raise QueryError(f"give either images ({len(images)} given) or take_next_frames ({take}), not both")
        if not take and not images:
            raise QueryError("give example images or take_next_frames > 0")
        if max(take, len(images)) > limit:
            raise QueryError(f"{max(take, len(images))} images asked for; the limit is {limit} "
                             "(parameter max_fewshot_images)")
        if max(take, len(images)) < least:
            given = max(take, len(images))
            what = ("frame" if take else "image") + ("" if given == 1 else "s")
            raise QueryError(f"{given} {what} given; a few-shot job needs at least {least} distinct views "
                             "(parameter fewshot_min_shots)")
        if take and rois:
            raise QueryError(f"{len(rois)} rois given with take_next_frames: rois name regions of the goal's images; "
                             "leave them empty for camera frames")
        if rois and len(rois) != len(images):
            raise QueryError(f"{len(rois)} rois given for {len(images)} images: give one per image (width 0: none for "
                             "it), or none")
        if images and model.views != ["base_rgb"]:
            raise QueryError(f"model {model.model_version} stacks views {model.views}: use take_next_frames to take "
                             "them from the cameras")
        self._check_job_room(model, key)
        return key, description

    def _check_job_room(self, model: GraspModel, key: str) -> None:
        """QueryError unless another few-shot job may start: one per name at a time, at most max_fewshot_jobs
        collecting frames, queued or running in all."""
        collecting = [(j.job_id, j.name) for j in self._node.frame_jobs.all() if j.collecting]
        active = collecting + [(j.job_id, j.name) for j in model.jobs() if j.state in ACTIVE]
        same = [job_id for job_id, job_name in active if job_name == key]
        if same:
            raise QueryError(f"a few-shot job for {key!r} is already collecting frames, queued or running "
                             f"({', '.join(same)}): wait for its goal to end, or cancel it")
        most = int(self._node.params["max_fewshot_jobs"])
        if len(active) >= most:
            raise QueryError(f"{len(active)} few-shot jobs are collecting frames, queued or running, the most allowed "
                             "(parameter max_fewshot_jobs): wait for a goal to end, or cancel one")

    def start_from_images(self, model: GraspModel, key: str, description: str, images: list[Image],
                          rois: list[RegionOfInterest]) -> GraspJob:
        """The model's few-shot job from a goal's images and rois (blocking: a model worker runs it)."""
        views, boxes = [], []
        for i, img in enumerate(images):
            try:
                view = self._node.model_input(model, img)
            except QueryError as err:
                raise QueryError(f"images[{i}]: {err}") from err
            views.append(view)
            boxes.append(roi_box(rois[i], img, view.shape, i) if rois else None)
        try:
            return self._start(model, key, description, views, boxes)
        except ValueError as err:
            raise QueryError(str(err).replace("image[", "images[")) from err

    def _start(self, model: GraspModel, key: str, description: str, views: list, boxes: list | None = None
               ) -> GraspJob:
        """The model's few-shot job from converted views (at least fewshot_min_shots distinct ones)."""
        params = self._node.params
        model.fewshot = replace(model.fewshot, min_heldout_auc=float(params["fewshot_min_heldout_auc"]))
        return model.add_object(key, views, description=description or None, k=int(params["fewshot_min_shots"]),
                                rois=boxes)

    async def _collect(self, goal: ServerGoalHandle, model: GraspModel, frame_job: FrameJob) -> GraspJob | None:
        """Wait for a take_next_frames goal's distinct frames (feedback as they come), then start its job on a model
        worker; None when the frames did not come in time, the node was deactivated or the goal was cancelled
        meanwhile (the frame job says which)."""
        node, sent = self._node, None
        while frame_job.collecting and not frame_job.complete:
            if goal.is_cancel_requested:
                node.frame_jobs.cancel(frame_job.job_id)
                break
            sent = self._feedback(goal, sent, "collecting", 0.0, len(frame_job.frames))
            await self._next_step()
        if not frame_job.collecting:
            return None
        frames, extra = frame_job.frames, frame_job.extra
        self._feedback(goal, sent, "collecting", 0.0, len(frames))

        def start() -> GraspJob:
            views = [node.model_input(model, msg, other) for msg, other in zip(frames, extra)]
            return self._start(model, frame_job.name, frame_job.description, views)

        try:
            frame_job.model_job = await node.in_worker(start)
        except (QueryError, ValueError, VlkdError) as err:
            frame_job.state, frame_job.message = "failed", str(err).replace("image[", "frame[")
            return None
        finally:
            frame_job.frames, frame_job.extra, frame_job.thumbs = [], [], []
        node.get_logger().info(f"add_object({frame_job.name!r}): job {frame_job.model_job.job_id} started with "
                               f"{len(frames)} distinct camera frames")
        return frame_job.model_job

    async def _follow(self, goal: ServerGoalHandle, model: GraspModel, job: GraspJob, frames: int
                      ) -> AddObject.Result:
        """Feedback (`frames`: the distinct camera frames it learns from) until the job ends, cancelling it when the
        goal's cancel comes; then the goal's result."""
        sent, cancelled = None, False
        while job.state in ACTIVE:
            if goal.is_cancel_requested and not cancelled:
                model.cancel(job.job_id)
                cancelled = True
            sent = self._feedback(goal, sent, str(job.state), float(job.progress), frames)
            await self._next_step()
        return self._end(goal, str(job.state), str(job.message), model)

    @staticmethod
    def _feedback(goal: ServerGoalHandle, sent: tuple | None, stage: str, progress: float, frames: int
                  ) -> tuple:
        """Publish the goal's feedback when it changed since `sent`; return what it says now."""
        now = (stage, round(progress, 3), frames)
        if now != sent:
            goal.publish_feedback(AddObject.Feedback(stage=stage, progress=progress, distinct_frames=frames))
        return now

    def _end(self, goal: ServerGoalHandle, state: str, message: str, model: GraspModel | None,
             refused: bool = False) -> AddObject.Result:
        """End the goal as its job ended (state succeeded, cancelled, else failed) with the result saying so, and log
        it (a refusal at debug level: hostile clients must not flood the log)."""
        if state == "succeeded":
            goal.succeed()
        elif state == "cancelled" and goal.is_cancel_requested:
            goal.canceled()
        else:
            goal.abort()
        result = AddObject.Result(success=state == "succeeded", message=message,
                                  model_version=str(model.model_version) if model is not None else "")
        log = self._node.get_logger()
        (log.debug if refused else log.info)(f"add_object({goal.request.name[:100]!r}): {state}: {message}")
        return result


def roi_box(roi: RegionOfInterest, msg: Image, shape: tuple, index: int) -> tuple[float, float, float, float] | None:
    """A goal's region of interest in images[index] (`msg`, pixels) as the model's box in pixels of its converted
    view (`shape`: HxWx3); None when it gives none (width or height 0); QueryError when it reaches outside."""
    if roi.width == 0 or roi.height == 0:
        return None
    if roi.x_offset + roi.width > msg.width or roi.y_offset + roi.height > msg.height:
        raise QueryError(f"rois[{index}] (x_offset {roi.x_offset}, y_offset {roi.y_offset}, {roi.width}x{roi.height}) "
                         f"reaches outside images[{index}] ({msg.width}x{msg.height})")
    sx, sy = shape[1] / msg.width, shape[0] / msg.height
    return (roi.x_offset * sx, roi.y_offset * sy, (roi.x_offset + roi.width) * sx, (roi.y_offset + roi.height) * sy)
