"""Offline distillation of a CLIP teacher into a small student (library; no CLI or ROS imports)."""
from vlkd_formats import moved as _moved

_moved.install()
