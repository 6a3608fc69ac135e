"""vlkd_ros: CLIP-to-student distillation and its ROS 2 grasp-feasibility node.

Importing this package pulls in no ROS module; only `vlkd_ros.node` needs rclpy.
"""
__version__ = "0.1.0"
