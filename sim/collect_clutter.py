"""`vlkd collect clutter`: table scenes of 3-8 dropped objects, base and hand RGB-D, per-object grasp labels.

Splits: X_id = scenes made of Y_id objects only (split `train`, or `val_on_train` for a held-out share); X_ood =
scenes holding at least one Y_ood object (split `val`). The scene list is `scenes.json` (ManiSkill PickClutter
episode format, see sim.clutter_episodes). Each settled scene is seen from `views_per_scene` base-camera poses
(sim.viewpoints); each (scene, view) is one manifest row, index = scene * views_per_scene + view, with its images
under `episodes/<index>/{base,hand}_{rgb,depth,seg}.png` (depth: 16-bit PNG, millimetres; seg: 8-bit, pixel k = the
row's k-th object, 0 = anything else). `manifest.jsonl` rows: {index, episode (= index), scene, view, split (the
scene's), seed (the scene's), camera: {eye, target, fov_deg}, [lighting], images: {base_rgb, base_depth, base_seg,
hand_rgb, hand_depth, hand_seg}, objects: [{name, present, visible_fraction, visible_pixels, supports_other,
graspable, bbox}]}; visible_fraction, visible_pixels and bbox are the view's. Labels not listed in a row are absent
from that scene. The graspable rule is sim.envs.clutter_labels.RULE.
Offline and user object sets use our `VlkdPickClutter-v1`; `--objects ycb` uses ManiSkill's `PickClutterYCB-v1`
(through its subclass `VlkdPickClutterYCB-v1`, which only adds episode choice, the raised arm and settling).
"""
from __future__ import annotations

from dataclasses import asdict
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
from sim.randomization import rounded
from sim.shards import PartWriter, Progress, env_batches, merge_rows, pending, prepare_out_dir, run_workers
from sim.viewpoints import scene_lighting, scene_views
from sim.ycb import YCB_ASSETS, require_assets
from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.dataset_dir import DatasetInfo
from vlkd_formats.image_codec import write_depth_png, write_label_png, write_rgb_png
from vlkd_formats.split import split_labels

KIND = "clutter"
SCENES_FILE = "scenes.json"
HAND_CAMERA = "hand_camera"


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
        views = config.views_per_scene
        todo = pending(plan, out, 0, 1, views)
        if todo:
            run_workers(render_shard, (config, str(out)), min(config.workers, len(todo)), len(plan),
                        len(plan) - len(todo), desc=f"{KIND} {out.name}", per_sample=2 * views)
        rows = merge_rows(out)
        info = DatasetInfo(kind=KIND, labels=labels, descriptions={n: catalog.get(n).description for n in labels},
                           split=split, settings={**settings, "object_set": catalog.name, "episodes_written": len(rows),
                                                  "scenes_written": len({r["scene"] for r in rows}),
                                                  "graspable_rule": RULE})
        write_dataset(out, info, rows)
        write_card(out, clutter_card(info, rows, catalog, RULE))
        tiles = [([r["images"]["base_rgb"], r["images"]["hand_rgb"], r["images"]["base_depth"]],
                  f"#{r['scene']}" + (f" v{r['view']}" if views > 1 else "") + f" {r['split']}: "
                  f"{sum(o['graspable'] for o in r['objects'])}/{len(r['objects'])} graspable")
                 for r in rows[: config.montage_size]]
        write_montage(out, tiles, columns=4)
        return info


def write_scenes(config: ClutterConfig, out: Path) -> Path:
    """Write `scenes.json`, the episode file the workers' envs load (deterministic, so rewriting it is harmless)."""
    catalog, _, _, plan = _plan(config)
    return atomic_write_json(out / SCENES_FILE, [episode_record(e, catalog) for e in plan])


def render_shard(config: ClutterConfig, out: str, worker: int, workers: int, progress: Progress) -> None:
    """Render this worker's unfinished scenes (index % workers == worker), each from all its views, appending each
    (scene, view) row to its part manifest."""
    from sim.envs.clutter import base_view_uid
    from sim.envs.clutter_labels import scene_labels

    root = Path(out)
    catalog, _, _, plan = _plan(config)
    views = config.views_per_scene
    todo = pending(plan, root, worker, workers, views)
    if not todo:
        return
    env = _make_env(config, root / SCENES_FILE)
    writer = PartWriter(root, worker)
    cameras = [base_view_uid(v) for v in range(views)]
    try:
        base = env.unwrapped
        for batch, padded in env_batches(todo, base.num_envs):
            poses = [scene_views(config, e) for e in padded]
            lights = [scene_lighting(config.lighting, e) for e in padded]
            obs, _ = env.reset(seed=[e.seed for e in padded], options={
                "episode_idx": [e.index for e in padded], "base_views": poses, "lighting": lights,
                "reconfigure": True})  # a new scene per reset also with num_envs > 1 (GPU), which ManiSkill reuses
            sensors = obs["sensor_data"]
            labels = scene_labels(base, [list(e.objects) for e in padded],
                                  {c: sensors[c]["segmentation"] for c in cameras}, config.visible_threshold)
            for j, episode in enumerate(batch):
                actors = base.selectable_target_objects[j]
                for v, camera in enumerate(cameras):
                    index = episode.index * views + v
                    row = {"index": index, "episode": index, "scene": episode.index, "view": v,
                           "split": episode.split, "seed": episode.seed, "camera": rounded(asdict(poses[j][v])),
                           "images": _write_images(root, index, sensors, j, camera, actors),
                           "objects": labels[camera][j]}
                    if lights[j] is not None:
                        row["lighting"] = rounded(asdict(lights[j]))
                    writer.append(row)
                progress(1)
    finally:
        writer.close()
        env.close()


def _make_env(config: ClutterConfig, scenes: Path):
    from sim.envs import PICK_CLUTTER_ENV, PICK_CLUTTER_YCB_ENV
    from sim.envs.make import make_env

    # the base cameras' poses and field of view come with each reset (`base_views`)
    common = dict(num_envs=config.num_envs, obs_mode="rgb+depth+segmentation", episode_json=str(scenes),
                  settle_steps=config.settle_steps,
                  sensor_configs={"width": config.image_size, "height": config.image_size})
    if config.objects == "ycb":
        require_assets([YCB_ASSETS])
        return make_env(PICK_CLUTTER_YCB_ENV, config.sim_backend, **common)
    return make_env(PICK_CLUTTER_ENV, config.sim_backend, object_set=config.objects, **common)


def _write_images(root: Path, index: int, sensors: dict[str, Any], j: int, base_camera: str,
                  actors: list) -> dict[str, str]:
    """Write one row's base (view `base_camera`) and hand RGB, depth and object-mask images of parallel scene j."""
    from sim.envs.clutter_labels import object_mask

    folder = f"episodes/{index:06d}"
    images = {}
    for view, camera in (("base", base_camera), ("hand", HAND_CAMERA)):
        data = sensors[camera]
        for kind in ("rgb", "depth", "seg"):
            images[f"{view}_{kind}"] = f"{folder}/{view}_{kind}.png"
        write_rgb_png(root / images[f"{view}_rgb"], data["rgb"][j].cpu().numpy())
        write_depth_png(root / images[f"{view}_depth"], data["depth"][j].cpu().numpy().astype(np.int32))
        write_label_png(root / images[f"{view}_seg"], object_mask(data["segmentation"][j], actors))
    return images


def _plan(config: ClutterConfig) -> tuple[ObjectSet, list[str], dict[str, list[str]], list[ClutterEpisode]]:
    catalog = load_object_set(config.objects).select(config.labels)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    split = split_labels(catalog.names, config.split, config.ood_fraction, split_seed)
    labels = [n for n in catalog.names if n in split["id"] or n in split["ood"]]
    plan = clutter_plan(split, config.episodes, config.min_objects, config.max_objects, config.ood_episode_fraction,
                        config.val_fraction, config.seed)
    return catalog, labels, split, plan
