"""A background few-shot job as `GraspFeasibility.add_object` returns it."""
from __future__ import annotations

import threading
from typing import Any

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


class JobCancelled(Exception):
    """Raised inside a running job whose cancel was requested: it stops and changes nothing."""


class FewShotJob:
    """A background few-shot finetune: state 'queued' -> 'running' -> 'succeeded' | 'failed' | 'cancelled'.
    `description` is what the object's description becomes if it succeeds (None: kept); `shots` how many
    distinct shots it learns from (the last of them held out to judge it)."""

    def __init__(self, job_id: str, name: str, description: str | None = None, shots: int = 0):
        self.job_id, self.name, self.description, self.shots = job_id, name, description, shots
        self.state, self.progress, self.message = "queued", 0.0, ""
        self.report: dict[str, Any] = {}
        self._done = threading.Event()
        self._cancel = threading.Event()

    @property
    def active(self) -> bool:
        """Whether the job is still queued or running."""
        return self.state in ACTIVE

    @property
    def cancel_requested(self) -> bool:
        """Whether `GraspFeasibility.cancel` asked this job to stop."""
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        """Ask the job to stop at its next step (the worker raises JobCancelled there)."""
        self._cancel.set()

    def check_cancel(self) -> None:
        """Raise JobCancelled if a cancel was requested (the worker calls it between steps)."""
        if self._cancel.is_set():
            raise JobCancelled(self.job_id)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (True) or `timeout` seconds passed (False)."""
        return self._done.wait(timeout)

    def finish(self) -> None:
        """Mark the job finished (its state and message set): wakes every `wait`."""
        self._done.set()

    def __repr__(self) -> str:
        return f"FewShotJob({self.job_id!r}, {self.name!r}, {self.state}, {self.progress:.0%}, {self.message!r})"
