"""vlkd_ros: CLIP-to-student distillation and its ROS 2 grasp-feasibility node.

Layers, each importing only those below it: `vlkd_ros.cli` (the `vlkd` command) > `vlkd_ros.ros` (the ROS 2 node)
and `vlkd_ros.pipeline` (mini-world jobs) > `vlkd_ros.inference` (the inference API) > `training` > `sim` >
`vlkd_formats` (on-disk formats). Importing this package pulls in nothing; only `vlkd_ros.ros` needs rclpy.
"""
__version__ = "0.2.0"
