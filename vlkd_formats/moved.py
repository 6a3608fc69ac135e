"""Import paths of modules moved by the one-way layout (format v2): importing an old path says where it went.

A finder at the end of `sys.meta_path` answers only imports nothing else could resolve, so it never shadows a
real module; `install()` is called by each root package's `__init__`.
"""
from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

MOVED = {
    "vlkd_ros.atomic_io": "vlkd_formats.atomic_io",
    "vlkd_ros.dataset_dir": "vlkd_formats.dataset_dir",
    "vlkd_ros.object_registry": "vlkd_formats.object_registry",
    "vlkd_ros.node": "vlkd_ros.ros.perception_node",
    "vlkd_ros.ros_image": "vlkd_ros.ros.image_msgs",
    "vlkd_ros.client": "vlkd_ros.ros.client",
    "vlkd_ros.sim_camera": "vlkd_ros.ros.sim_camera",
    "training.config": "vlkd_formats.config",
    "sim.image_io": "vlkd_formats.image_codec",
    **{f"training.grasp_{name}": f"training.grasp.{name}"
       for name in ("data", "losses", "model", "text", "train", "eval", "fewshot", "export", "model_dir")},
}


class MovedModuleFinder(MetaPathFinder):
    """Raises ModuleNotFoundError naming the new home of a moved module."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 - the MetaPathFinder protocol
        new = MOVED.get(fullname)
        if new is None:
            return None
        raise ModuleNotFoundError(f"{fullname} moved to {new} (vlkd_ros 0.2 layout: see README, 'How the pieces "
                                  f"fit'); update the import", name=fullname)


def install() -> None:
    """Append the finder to sys.meta_path once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
