"""Simulation data collection in ManiSkill 3 (library; no CLI or ROS imports).

Where things are decided: object categories `objects` (the dataclasses) read by `catalog` (+
`assets/object_sets/offline.yaml`, `ycb`, whose paper split is `assets/splits/ycb_paper.yaml`), their sizes and
resting poses `geometry`, randomisation `randomization`, per-sample seeds `plan` (the ID/OOD split itself:
`vlkd_formats.split`), clutter scenes `clutter_episodes`, their base-camera views and lights `viewpoints`, settings
`config` (shipped collection configs: `configs/*.yaml`, e.g. `vlkd collect clutter --config clutter_train`), workers
and resume `shards`, the two collectors `collect_*`, cards `card`. Only `sim.envs` (the ManiSkill envs, imported by the render workers) loads
SAPIEN / ManiSkill.
"""
