"""Offline distillation of a CLIP teacher into a small student (library; no CLI or ROS imports)."""
