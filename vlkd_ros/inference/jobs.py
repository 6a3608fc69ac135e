"""A background few-shot job as `GraspFeasibility.add_object` returns it."""
from __future__ import annotations

import threading
from typing import Any


class FewShotJob:
    """A background few-shot finetune: state 'queued' -> 'running' -> 'succeeded' | 'failed'."""

    def __init__(self, job_id: str, name: str):
        self.job_id, self.name = job_id, name
        self.state, self.progress, self.message = "queued", 0.0, ""
        self.report: dict[str, Any] = {}
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (True) or `timeout` seconds passed (False)."""
        return self._done.wait(timeout)

    def finish(self) -> None:
        """Mark the job finished (its state and message set): wakes every `wait`."""
        self._done.set()

    def __repr__(self) -> str:
        return f"FewShotJob({self.job_id!r}, {self.name!r}, {self.state}, {self.progress:.0%}, {self.message!r})"
