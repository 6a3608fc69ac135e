"""Installs vlkd_ros as a Python package and as a ROS 2 ament_python package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vlkd_ros"

setup(
    name=PACKAGE,
    version="0.2.0",
    packages=find_packages(include=["vlkd_formats", "vlkd_formats.*", "vlkd_runtime", "vlkd_runtime.*", "vlkd_ros",
                                    "vlkd_ros.*", "training", "training.*", "sim", "sim.*"]),
    # Package data (also in a non-editable install): the shipped job configs (training/configs, found by
    # `--config configs/NAME.yaml` from any directory), open_clip model configs, the offline teacher, object sets,
    # and the shipped grasp model dirs (vlkd_ros/models/grasp_default: what `vlkd serve` serves by default).
    package_data={"sim": ["assets/**/*", "*.yaml", "configs/*.yaml"],
                  "training": ["configs/*.yaml", "model_configs/*.json", "assets/offline_teacher/*",
                               "assets/table_teacher/*"],
                  "vlkd_ros": ["models/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # ROS 2 params (not job configs): ROS tooling looks for them in share/vlkd_ros/config
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="vlkd_ros maintainers",
    maintainer_email="maintainers@vlkd-ros.org",
    description="CLIP distillation into small students, served as a ROS 2 grasp-feasibility node.",
    license="MIT",
    entry_points={"console_scripts": ["vlkd = vlkd_ros.cli:main", "vlkd_perception = vlkd_ros.ros.perception_node:main"]},
)
