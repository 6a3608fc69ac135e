"""The inference API: what the ROS node, the CLI and user code call to get answers from a trained model dir.

`GraspFeasibility` (grasp answers, few-shot objects) lives in `vlkd_ros.inference.grasp`.
"""
from vlkd_ros.inference.grasp import (FewShotJob, GraspFeasibility, episode_observation, name_quality,
                                      read_observation)

__all__ = ["FewShotJob", "GraspFeasibility", "episode_observation", "name_quality", "read_observation"]
