"""What callers such as the ROS node need of a grasp-feasibility model: `GraspModel` and its `GraspJob`s.
`vlkd_ros.inference.GraspFeasibility` and `FewShotJob` satisfy them structurally."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class GraspJob(Protocol):
    """A background few-shot job as its callers read it (e.g. `FewShotJob`)."""

    job_id: str
    state: str  # "queued" -> "running" -> "succeeded" | "failed"
    progress: float
    message: str


@runtime_checkable
class GraspModel(Protocol):
    """A loaded grasp-feasibility model: open-vocabulary answers and few-shot learning of new objects."""

    @property
    def model_version(self) -> str:
        """Version of the weights now serving; changes whenever they are swapped."""

    @property
    def views(self) -> list[str]:
        """Views the model stacks, in order (keys of a dict observation; base_rgb alone: an RGB array)."""

    @property
    def image_size(self) -> int:
        """Side of the square model input."""

    def objects(self) -> list[tuple[str, str]]:
        """(name, description) of every object the model knows."""

    def query(self, images: Any, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation: {name: {"graspable": bool, "score": float}}."""

    def add_object(self, name: str, images: Any, description: str | None = None, k: int = 5) -> GraspJob:
        """Register `name` at once and learn it from `images` in the background."""

    def job(self, job_id: str) -> GraspJob | None:
        """A few-shot job by id (None if unknown)."""

    def close(self, timeout: float | None = None) -> None:
        """Stop the background work after the queued jobs (waiting at most `timeout` seconds)."""
