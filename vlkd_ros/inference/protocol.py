"""What callers such as the ROS node need of a grasp-feasibility model: `GraspModel`, the `GraspEmbedding`s it
computes and its `GraspJob`s. `vlkd_ros.inference.GraspFeasibility`, its `Embedding` and `FewShotJob` satisfy them
structurally."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from vlkd_runtime.query_fit import Box


@runtime_checkable
class GraspJob(Protocol):
    """A background few-shot job as its callers read it (e.g. `FewShotJob`)."""

    job_id: str
    name: str
    state: str  # "queued" -> "running" -> "succeeded" | "failed" | "cancelled"
    progress: float
    message: str


@runtime_checkable
class GraspEmbedding(Protocol):
    """The model's image features of some observations (`GraspModel.embed`), to `answer` names about; whatever
    the model's scorer reads (one global vector or dense feature maps per observation), opaque to callers."""

    @property
    def model_version(self) -> str:
        """Version of the weights that computed it."""

    def __len__(self) -> int:
        """Number of observations embedded."""


@runtime_checkable
class GraspModel(Protocol):
    """A loaded grasp-feasibility model: open-vocabulary answers and few-shot learning of new objects."""

    backend: str  # the image encoder's backend ("onnx", "onnx-int8" or "torch")

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
        """(name, description) of every object the model knows, then of new ones a job is learning."""

    def query(self, images: Any, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation: {name: {"graspable": bool, "score": float}} (`answer(embed(images), names)`)."""

    def embed(self, images: Any) -> GraspEmbedding:
        """Run the image encoder once on one observation or a list of them (the costly half of `query`)."""

    def answer(self, embedding: GraspEmbedding, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """`query`'s answers from an `embed` result (cheap: cached text features, scorer, thresholds); a dense model
        adds "location" to each answer: {"u", "v", "box": [x0, y0, x1, y1], "confidence"} in [0, 1] of its square
        input."""

    def add_object(self, name: str, images: Any, description: str | None = None, k: int = 5,
                   rois: Sequence[Box | None] | None = None) -> GraspJob:
        """Learn `name` from `images` (each with its region of interest, or None) in the background (ValueError:
        refused, no job); nothing is persisted unless the job succeeds."""

    def remove_object(self, name: str) -> str:
        """Forget an object `add_object` taught (every other object's answers unchanged); returns the new
        model_version (a VlkdError, nothing changed, for an unknown name or one the model was trained on)."""

    def job(self, job_id: str) -> GraspJob | None:
        """A few-shot job by id (None if unknown)."""

    def jobs(self) -> list[GraspJob]:
        """The few-shot jobs, oldest first (every active one and the latest finished ones)."""

    def cancel(self, job_id: str) -> GraspJob | None:
        """Cancel a queued or running job, which then changes nothing (None if unknown)."""

    def close(self, timeout: float | None = None) -> None:
        """Stop the background work after the queued jobs (waiting at most `timeout` seconds)."""
