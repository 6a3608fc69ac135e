"""~/add_object calls with take_next_frames: `FrameJobs` queues them, hands them the next camera frames, and
fails those whose frames do not come in time; the node starts the model's job of each ready one.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing vlkd_ros.inference loads torch; the node does that only when it loads the model
    from vlkd_ros.inference.protocol import GraspJob


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
    model_job: GraspJob | None = None
    state: str = "queued"
    message: str = ""

    @property
    def collecting(self) -> bool:
        """Whether the job still waits for frames (queued, no model job yet)."""
        return self.state == "queued" and self.model_job is None


class FrameJobs:
    """The frame jobs of one node, by id; thread-safe (camera, service and timer callbacks use it)."""

    def __init__(self) -> None:
        self._jobs: dict[str, FrameJob] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        """Whether any frame job was ever queued (the camera callback's fast path)."""
        return bool(self._jobs)

    def queue(self, name: str, description: str, take: int, timeout: float) -> FrameJob:
        """Register a job that starts once `take` more camera frames have arrived within `timeout` seconds."""
        job = FrameJob(job_id=f"frames-{uuid.uuid4().hex[:12]}", name=name, description=description, needed=take,
                       deadline=time.monotonic() + timeout)
        with self._lock:
            self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> FrameJob | None:
        """The frame job `job_id`, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def offer(self, msg: Any, extra: dict[str, Any]) -> bool:
        """Give a new colour frame (and the other views' latest messages) to every collecting job; True when
        one of them now has all its frames."""
        ready = False
        with self._lock:
            for job in self._jobs.values():
                if job.collecting and len(job.frames) < job.needed:
                    job.frames.append(msg)
                    job.extra.append(dict(extra))
                    ready |= len(job.frames) == job.needed
        return ready

    def ready(self) -> list[FrameJob]:
        """Collecting jobs that have all their frames (their model job is to be started)."""
        with self._lock:
            return [job for job in self._jobs.values() if job.collecting and len(job.frames) >= job.needed]

    def waiting(self) -> int:
        """How many jobs are still collecting frames."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.collecting)

    def fail_collecting(self, message: str) -> None:
        """Fail every job still collecting frames with `message` (e.g. the node was deactivated)."""
        with self._lock:
            for job in self._jobs.values():
                if job.collecting:
                    job.state, job.message = "failed", message

    def expire(self, topic: str, now: float | None = None) -> list[FrameJob]:
        """Fail the jobs whose frames did not come on `topic` before their deadline; return them."""
        now = time.monotonic() if now is None else now
        expired = []
        with self._lock:
            for job in self._jobs.values():
                if job.collecting and now > job.deadline and len(job.frames) < job.needed:
                    job.state = "failed"
                    job.message = (f"only {len(job.frames)} of {job.needed} frames arrived on {topic} within "
                                   "fewshot_frame_timeout")
                    job.frames, job.extra = [], []
                    expired.append(job)
        return expired
