"""`vlkd collect clutter`: table scenes of 3-8 dropped objects, base and hand RGB-D, per-object grasp labels.

Splits: X_id = scenes made of Y_id objects only (split `train`, or `val_on_train` for a held-out share); X_ood =
scenes holding at least one Y_ood object (split `val`). The scene list is `scenes.json` (ManiSkill PickClutter
episode format, see sim.clutter_episodes); images are under `episodes/<id>/{base,hand}_{rgb,depth}.png` (depth:
16-bit PNG, millimetres). `manifest.jsonl` rows: {index, episode, split, seed, images: {base_rgb, base_depth,
hand_rgb, hand_depth}, objects: [{name, present, visible_fraction, visible_pixels, supports_other, graspable}]};
labels not listed in a row are absent from that scene. The graspable rule is sim.envs.clutter_labels.RULE.
Offline and user object sets use our `VlkdPickClutter-v1`; `--objects ycb` uses ManiSkill's `PickClutterYCB-v1`
(through its subclass `VlkdPickClutterYCB-v1`, which only adds episode choice, the raised arm and settling).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.backend import check_sim_backend
from sim.card import clutter_card, write_card, write_montage
from sim.catalog import load_object_set
from sim.clutter_episodes import episode_record
from sim.config import ClutterConfig
from sim.finalize import json_ready, write_dataset
from sim.geometry import check_readable
from sim.objects import ObjectSet
from sim.plan import ClutterEpisode, clutter_plan
from sim.shards import (PartWriter, Progress, done_indices, env_batches, merge_rows, pending, prepare_out_dir,
                        run_workers)
from sim.ycb import YCB_ASSETS, require_assets
from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.dataset_dir import DatasetInfo
from vlkd_formats.image_codec import write_depth_png, write_rgb_png
from vlkd_formats.split import split_labels

KIND = "clutter"
SCENES_FILE = "scenes.json"
CAMERAS = {"base": "base_camera", "hand": "hand_camera"}


def collect_clutter(config: ClutterConfig, out: str | Path, overwrite: bool = False) -> DatasetInfo:
    """Render (or resume) a clutter dataset into `out` and write its manifest, dataset.json and card."""
    from sim.envs.clutter_labels import RULE

    out = Path(out)
    config.validate()
    catalog, labels, split, plan = _plan(config)
    check_readable(catalog.objects)
    check_sim_backend(config.sim_backend)
    settings = json_ready({"kind": KIND, **config.settings()})
    with prepare_out_dir(out, settings, overwrite):  # held while this run writes `out`
        write_scenes(config, out)
        done = done_indices(out)
        if len(done) < len(plan):
            run_workers(render_shard, (config, str(out)), min(config.workers, len(plan) - len(done)), len(plan),
                        len(done), desc=f"{KIND} {out.name}", per_sample=len(CAMERAS))
        rows = merge_rows(out)
        info = DatasetInfo(kind=KIND, labels=labels, descriptions={n: catalog.get(n).description for n in labels},
                           split=split, settings={**settings, "object_set": catalog.name, "episodes_written": len(rows),
                                                  "graspable_rule": RULE})
        write_dataset(out, info, rows)
        write_card(out, clutter_card(info, rows, catalog, RULE))
        tiles = [([r["images"]["base_rgb"], r["images"]["hand_rgb"], r["images"]["base_depth"]],
                  f"#{r['episode']} {r['split']}: {sum(o['graspable'] for o in r['objects'])}/{len(r['objects'])} "
                  "graspable") for r in rows[: config.montage_size]]
        write_montage(out, tiles, columns=4)
        return info


def write_scenes(config: ClutterConfig, out: Path) -> Path:
    """Write `scenes.json`, the episode file the workers' envs load (deterministic, so rewriting it is harmless)."""
    catalog, _, _, plan = _plan(config)
    return atomic_write_json(out / SCENES_FILE, [episode_record(e, catalog) for e in plan])


def render_shard(config: ClutterConfig, out: str, worker: int, workers: int, progress: Progress) -> None:
    """Render this worker's unfinished episodes (index % workers == worker), appending each to its part manifest."""
    from sim.envs.clutter_labels import scene_labels

    root = Path(out)
    catalog, _, _, plan = _plan(config)
    todo = pending(plan, root, worker, workers)
    if not todo:
        return
    env = _make_env(config, root / SCENES_FILE)
    writer = PartWriter(root, worker)
    try:
        base = env.unwrapped
        for batch, padded in env_batches(todo, base.num_envs):
            obs, _ = env.reset(seed=[e.seed for e in padded], options={"episode_idx": [e.index for e in padded]})
            sensors = obs["sensor_data"]
            names = [list(e.objects) for e in padded]
            objects = scene_labels(base, names, sensors[CAMERAS["base"]]["segmentation"], config.visible_threshold)
            for j, episode in enumerate(batch):
                images = _write_images(root, episode, sensors, j)
                writer.append({"index": episode.index, "episode": episode.index, "split": episode.split,
                               "seed": episode.seed, "images": images, "objects": objects[j]})
                progress(1)
    finally:
        writer.close()
        env.close()


def _make_env(config: ClutterConfig, scenes: Path):
    import torch
    from mani_skill.utils import sapien_utils

    from sim.envs import PICK_CLUTTER_ENV, PICK_CLUTTER_YCB_ENV
    from sim.envs.make import make_env

    pose = sapien_utils.look_at(torch.tensor(config.base_camera_eye, dtype=torch.float32),
                                torch.tensor(config.base_camera_target, dtype=torch.float32))
    cameras = {"width": config.image_size, "height": config.image_size,
               "base_camera": {"pose": pose.raw_pose[0].tolist(), "fov": float(np.radians(config.base_camera_fov_deg))}}
    common = dict(num_envs=config.num_envs, obs_mode="rgb+depth+segmentation", episode_json=str(scenes),
                  settle_steps=config.settle_steps, sensor_configs=cameras)
    if config.objects == "ycb":
        require_assets([YCB_ASSETS])
        return make_env(PICK_CLUTTER_YCB_ENV, config.sim_backend, **common)
    return make_env(PICK_CLUTTER_ENV, config.sim_backend, object_set=config.objects, **common)


def _write_images(root: Path, episode: ClutterEpisode, sensors: dict[str, Any], j: int) -> dict[str, str]:
    folder = f"episodes/{episode.index:06d}"
    images = {}
    for view, camera in CAMERAS.items():
        data = sensors[camera]
        images[f"{view}_rgb"] = f"{folder}/{view}_rgb.png"
        images[f"{view}_depth"] = f"{folder}/{view}_depth.png"
        write_rgb_png(root / images[f"{view}_rgb"], data["rgb"][j].cpu().numpy())
        write_depth_png(root / images[f"{view}_depth"], data["depth"][j].cpu().numpy().astype(np.int32))
    return images


def _plan(config: ClutterConfig) -> tuple[ObjectSet, list[str], dict[str, list[str]], list[ClutterEpisode]]:
    catalog = load_object_set(config.objects).select(config.labels)
    split = split_labels(catalog.names, config.split, config.ood_fraction, config.seed)
    labels = [n for n in catalog.names if n in split["id"] or n in split["ood"]]
    plan = clutter_plan(split, config.episodes, config.min_objects, config.max_objects, config.ood_episode_fraction,
                        config.val_fraction, config.seed)
    return catalog, labels, split, plan
