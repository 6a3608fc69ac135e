"""Simulation data collection in ManiSkill 3 (library; no CLI or ROS imports).

Where things are decided: object categories `catalog` (+ `assets/object_sets/offline.yaml`, `ycb`), their sizes
and resting poses `geometry`, randomisation `randomization`, ID/OOD splits and per-sample seeds `plan`, clutter
scenes `clutter_episodes`, settings `config`, workers and resume `shards`, the two collectors `collect_*`, cards
`card`. Only `sim.envs` (the ManiSkill envs, imported by the render workers) loads SAPIEN / ManiSkill.
"""
