"""~/add_object goals with take_next_frames: `FrameJobs` queues them, hands them the next camera frames that are
distinct views (near-duplicates and degenerate frames are skipped by the shot rules of
`vlkd_ros.inference.shots`), and fails those whose distinct frames do not come in time, saying why (a static
scene: move the object or the camera); each goal starts the model's job once its job is complete.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing vlkd_ros.inference loads torch; the node does that only when it loads the model
    import numpy as np

    from vlkd_ros.inference.protocol import GraspJob
    from vlkd_ros.inference.shots import ShotRules

@dataclass
class FrameJob:
    """An ~/add_object goal waiting for its next distinct camera frames before the model's few-shot job starts."""

    job_id: str
    name: str
    description: str
    needed: int
    deadline: float
    timeout: float = 0.0
    frames: list = field(default_factory=list)
    extra: list = field(default_factory=list)  # per frame: {view: latest message} of the model's other views
    thumbs: list = field(default_factory=list)  # per kept frame: its thumbnail (what near-duplicates are judged on)
    duplicates: int = 0  # frames skipped as near-duplicates of a kept one
    refused: int = 0  # frames skipped as no view of an object (flat, noise, unreadable)
    last_refusal: str = ""
    model_job: GraspJob | None = None
    state: str = "queued"
    message: str = ""

    @property
    def collecting(self) -> bool:
        """Whether the job still waits for frames (queued, no model job yet)."""
        return self.state == "queued" and self.model_job is None

    @property
    def complete(self) -> bool:
        """Whether the job is collecting and has all its frames (its model job is to be started)."""
        return self.collecting and len(self.frames) >= self.needed

    def progress_note(self) -> str:
        """'collecting camera frames: 2/5 distinct (40 near-duplicates skipped)'."""
        skipped = [f"{self.duplicates} near-duplicates"] if self.duplicates else []
        skipped += [f"{self.refused} unusable"] if self.refused else []
        return (f"collecting camera frames: {len(self.frames)}/{self.needed} distinct"
                + (f" ({', '.join(skipped)} skipped)" if skipped else ""))


class FrameJobs:
    """The collecting frame jobs of one node, by id; thread-safe (camera, action and timer callbacks use it)."""

    def __init__(self, rules: ShotRules | None = None) -> None:
        self._jobs: dict[str, FrameJob] = {}
        self._lock = threading.Lock()
        self._rules = rules

    def __bool__(self) -> bool:
        """Whether any frame job is kept (the camera callback's fast path)."""
        return bool(self._jobs)

    def queue(self, name: str, description: str, take: int, timeout: float) -> FrameJob:
        """Register a job that starts once `take` more distinct camera frames have arrived within `timeout` s (the
        jobs done collecting are forgotten: their goals hold them)."""
        job = FrameJob(job_id=f"frames-{uuid.uuid4().hex[:12]}", name=name, description=description, needed=take,
                       deadline=time.monotonic() + timeout, timeout=timeout)
        with self._lock:
            self._jobs = {job_id: j for job_id, j in self._jobs.items() if j.collecting}
            self._jobs[job.job_id] = job
        return job

    def all(self) -> list[FrameJob]:
        """Every frame job kept (the collecting ones and those done since the latest `queue`), oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def offer(self, msg: Any, extra: dict[str, Any], rgb: np.ndarray | None = None, problem: str = "") -> bool:
        """Give a new colour frame (`msg`; `rgb`: it as an RGB array, None when it could not be read, `problem`
        saying why) and the other views' latest messages to every collecting job; each keeps it if it is a view
        of something and no near-duplicate of a frame it kept. True when one of them now has all its frames."""
        from vlkd_ros.inference.shots import ShotRules, change, frame_problem, thumbnail

        rules = self._rules or ShotRules()
        if rgb is not None and not problem:
            problem = frame_problem(rgb, rules) or ""
        thumb = thumbnail(rgb, rules.thumb) if rgb is not None and not problem else None
        ready = False
        with self._lock:
            for job in self._jobs.values():
                if not job.collecting or len(job.frames) >= job.needed:
                    continue
                if thumb is None:
                    job.refused += 1
                    job.last_refusal = problem or "could not be read"
                elif any(change(thumb, kept) < rules.min_change for kept in job.thumbs):
                    job.duplicates += 1
                else:
                    job.frames.append(msg)
                    job.extra.append(dict(extra))
                    job.thumbs.append(thumb)
                    ready |= len(job.frames) == job.needed
        return ready

    def waiting(self) -> int:
        """How many jobs are still collecting frames."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.collecting)

    def cancel(self, job_id: str) -> FrameJob | None:
        """Cancel a job still collecting frames (its frames are dropped); others are returned unchanged."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.collecting:
                job.state, job.message = "cancelled", "cancelled while collecting frames; nothing changed"
                job.frames, job.extra, job.thumbs = [], [], []
            return job

    def fail_collecting(self, message: str) -> None:
        """Fail every job still collecting frames with `message` (e.g. the node was deactivated)."""
        with self._lock:
            for job in self._jobs.values():
                if job.collecting:
                    job.state, job.message = "failed", message
                    job.frames, job.extra, job.thumbs = [], [], []

    def expire(self, topic: str, now: float | None = None) -> list[FrameJob]:
        """Fail the jobs whose distinct frames did not come on `topic` before their deadline; return them."""
        now = time.monotonic() if now is None else now
        expired = []
        with self._lock:
            for job in self._jobs.values():
                if job.collecting and now > job.deadline and len(job.frames) < job.needed:
                    job.state = "failed"
                    job.message = (f"only {len(job.frames)} of {job.needed} distinct frames arrived on {topic} within "
                                   f"fewshot_frame_timeout ({job.timeout:g} s)")
                    if job.duplicates:
                        job.message += (f"; {job.duplicates} near-duplicates of earlier ones were skipped: the scene "
                                        "does not change, move the object or the camera while the frames are taken")
                    if job.refused:
                        job.message += f"; {job.refused} frames were unusable (the last {job.last_refusal})"
                    job.frames, job.extra, job.thumbs = [], [], []
                    expired.append(job)
        return expired
