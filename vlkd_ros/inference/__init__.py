"""The inference API: what the ROS node, the CLI and user code call to get answers from a trained model dir.

`GraspFeasibility` (grasp answers, few-shot objects) lives in `vlkd_ros.inference.grasp`, over `answerer`,
`learner`, `state_store` and `encoders`; its few-shot jobs in `jobs`, the default model and the state dir rule in
`model_paths`; observations from files and `name_quality` in `observations` (imported on first use: they read
datasets through `training`, which a serving process never imports).
"""
from typing import Any

from vlkd_ros.inference.grasp import GraspFeasibility
from vlkd_ros.inference.jobs import FewShotJob
from vlkd_ros.inference.model_paths import default_model_dir

__all__ = ["FewShotJob", "GraspFeasibility", "default_model_dir", "episode_observation", "name_quality",
           "read_observation"]
_OBSERVATIONS = ("episode_observation", "name_quality", "read_observation")


def __getattr__(name: str) -> Any:
    """The names of `observations`, imported when first asked for."""
    if name in _OBSERVATIONS:
        from vlkd_ros.inference import observations

        return getattr(observations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
