"""The inference API: what the ROS node, the CLI and user code call to get answers from a trained model dir.

`GraspFeasibility` (grasp answers, few-shot objects) lives in `vlkd_ros.inference.grasp`, its few-shot jobs in
`jobs`, the ONNX backend in `onnx_backend`, observations from files and `name_quality` in `observations`, the
default model and the state dir rule in `model_paths`.
"""
from vlkd_ros.inference.grasp import GraspFeasibility
from vlkd_ros.inference.jobs import FewShotJob
from vlkd_ros.inference.model_paths import default_model_dir
from vlkd_ros.inference.observations import episode_observation, name_quality, read_observation

__all__ = ["FewShotJob", "GraspFeasibility", "default_model_dir", "episode_observation", "name_quality",
           "read_observation"]
