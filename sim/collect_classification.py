"""`vlkd collect classification`: one object per image on a randomised table, in the dataset-dir format.

Output (see vlkd_formats.dataset_dir): `train/<slug>/<slug>_<rank>.png` for Y_id, `val_on_train/<slug>/` for held-out
images of Y_id (X_id), `val/<slug>/` for Y_ood (X_ood); slug = label with spaces replaced by underscores
(vlkd_formats.dataset_dir.label_slug). With split `none` every category is in-distribution and nothing goes to `val/`.
`manifest.jsonl` rows: {index, image, label, split, rank, object_id, seed, camera, render}.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sim.backend import check_sim_backend
from sim.card import classification_card, write_card, write_montage
from sim.catalog import load_object_set
from sim.config import ClassificationConfig
from sim.finalize import json_ready, write_dataset
from sim.geometry import check_readable
from sim.objects import ObjectSet
from sim.plan import ClassificationSample, classification_plan
from sim.shards import (PartWriter, Progress, done_indices, env_batches, merge_rows, pending, prepare_out_dir,
                        run_workers)
from vlkd_formats.dataset_dir import DatasetInfo
from vlkd_formats.image_codec import write_rgb_png
from vlkd_formats.split import split_labels

KIND = "classification"
SHADER = "minimal"


def collect_classification(config: ClassificationConfig, out: str | Path, overwrite: bool = False) -> DatasetInfo:
    """Render (or resume) a classification dataset into `out` and write its manifest, dataset.json and card."""
    out = Path(out)
    config.validate()
    catalog, labels, split, plan = _plan(config)
    check_readable(catalog.objects)
    check_sim_backend(config.sim_backend)
    settings = json_ready({"kind": KIND, **config.settings()})
    with prepare_out_dir(out, settings, overwrite):  # held while this run writes `out`
        done = done_indices(out)
        if len(done) < len(plan):
            run_workers(render_shard, (config, str(out)), min(config.workers, len(plan) - len(done)), len(plan),
                        len(done), desc=f"{KIND} {out.name}")
        rows = merge_rows(out)
        info = DatasetInfo(kind=KIND, labels=labels, descriptions={n: catalog.get(n).description for n in labels},
                           split=split, settings={**settings, "object_set": catalog.name, "images": len(rows)})
        write_dataset(out, info, rows)
        write_card(out, classification_card(info, rows, catalog))
        first = {}
        for row in rows:
            first.setdefault(row["label"], row)
        tiles = [([r["image"]], f"{r['label']} ({r['split']})") for r in list(first.values())[: config.montage_size]]
        write_montage(out, tiles)
        return info


def render_shard(config: ClassificationConfig, out: str, worker: int, workers: int, progress: Progress) -> None:
    """Render this worker's unfinished samples (index % workers == worker), appending each to its part manifest."""
    from sim.envs import OBJECT_ON_TABLE_ENV
    from sim.envs.make import make_env

    root = Path(out)
    catalog, labels, _, plan = _plan(config)
    todo = pending(plan, root, worker, workers)
    if not todo:
        return
    env = make_env(OBJECT_ON_TABLE_ENV, config.sim_backend, num_envs=config.num_envs, obs_mode="rgb",
                   object_set=config.objects, objects=labels, randomization=asdict(config.randomization),
                   image_size=config.image_size)
    writer = PartWriter(root, worker)
    try:
        for batch, padded in env_batches(todo, env.unwrapped.num_envs):
            obs, _ = env.reset(seed=[s.seed for s in padded], options={"object": [s.label for s in padded]})
            images = obs["sensor_data"]["base_camera"]["rgb"].cpu().numpy()
            for j, sample in enumerate(batch):
                row = _row(sample, catalog, env.unwrapped.draws[j].as_dict(), config)
                write_rgb_png(root / row["image"], images[j])
                writer.append(row)
                progress(1)
    finally:
        writer.close()
        env.close()


def _plan(config: ClassificationConfig) -> tuple[ObjectSet, list[str], dict[str, list[str]],
                                                  list[ClassificationSample]]:
    catalog = load_object_set(config.objects).select(config.labels)
    split = split_labels(catalog.names, config.split, config.ood_fraction, config.seed)
    labels = [n for n in catalog.names if n in split["id"] or n in split["ood"]]
    plan = classification_plan(split, labels, config.per_class, config.val_fraction, config.seed)
    return catalog, labels, split, plan


def _row(sample: ClassificationSample, catalog: ObjectSet, draw: dict[str, Any],
         config: ClassificationConfig) -> dict[str, Any]:
    spec = catalog.get(sample.label)
    camera = {**draw.pop("camera"), "width": config.image_size, "height": config.image_size}
    return {
        "index": sample.index, "image": f"{sample.split}/{spec.slug}/{spec.slug}_{sample.rank:05d}.png",
        "label": sample.label, "split": sample.split, "rank": sample.rank, "object_id": spec.object_id,
        "seed": sample.seed, "camera": camera,
        "render": {**draw, "sim_backend": config.sim_backend, "shader": SHADER},
    }
