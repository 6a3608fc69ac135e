"""The ROS 2 layer: the perception node, its message conversions, a Python client and the sim camera publisher.

Only this package (and the CLI above it) imports rclpy; it reaches the model only through `vlkd_ros.inference`.
"""
