"""Clutter episode files in ManiSkill's PickClutter format, generated from a plan.

A file is a JSON list of episodes `{"actors": [{"model_id", "pose": [x, y, z, qw, qx, qy, qz], "rep_pts": []}],
"index", "split", "seed"}` (ManiSkill reads `actors`; the rest is ours). Poses are drop poses: objects are spread
around a random centre of the table's work area and stacked above any earlier object they overlap, so that
settling the physics makes real clutter (objects leaning on and lying on each other). The same file drives our
`VlkdPickClutter-v1` and ManiSkill's `PickClutterYCB-v1` (poses refer to each model's own origin).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from sim.geometry import placement, rest_pose
from sim.objects import ObjectSet
from sim.plan import ClutterEpisode, clutter_plan

WORK_AREA = ((-0.12, 0.12), (-0.16, 0.16))
SPREAD = 0.06
DROP_GAP = 0.01
TRIES = 40
# Tops stay below the Panda's fingertips (at 0.35 m with the arm raised by sim.envs.clutter.raise_arm).
MAX_TOP = 0.28
DEFAULT_EPISODES = Path(__file__).parent / "assets" / "clutter" / "offline_episodes.json.gz"


def episode_record(episode: ClutterEpisode, catalog: ObjectSet) -> dict[str, Any]:
    """One episode's drop poses, drawn from the episode's seed.

    Each object gets a spot near the episode's centre (searching wider on each of TRIES tries, then anywhere in the
    work area), above every earlier
    object whose bounding circle it overlaps (so nothing starts inside another object), with its top below the
    robot's gripper; the first spot that fits is taken, else the lowest one found.
    """
    rng = np.random.default_rng([episode.seed, 1])
    (x_lo, x_hi), (y_lo, y_hi) = WORK_AREA
    centre = rng.uniform([x_lo + SPREAD, y_lo + SPREAD], [x_hi - SPREAD, y_hi - SPREAD])
    placed: list[tuple[np.ndarray, float, float]] = []
    actors = []
    for name in episode.objects:
        spec = catalog.get(name)
        place = placement(spec)
        radius = 0.5 * float(np.hypot(place.extents[0], place.extents[1]))
        best = None
        for attempt in range(2 * TRIES):
            if attempt < TRIES:
                xy = np.clip(centre + rng.normal(0, SPREAD * (1 + 2 * attempt / TRIES), 2), [x_lo, y_lo], [x_hi, y_hi])
            else:
                xy = rng.uniform([x_lo, y_lo], [x_hi, y_hi])
            below = [top for (other, r, top) in placed if np.linalg.norm(xy - other) < radius + r]
            z = DROP_GAP + max(below, default=0.0)
            if best is None or z < best[1]:
                best = (xy, z)
            if z + place.extents[2] <= MAX_TOP:
                best = (xy, z)
                break
        xy, z = best
        pose = rest_pose(place, 1.0, float(xy[0]), float(xy[1]), z, float(rng.uniform(0, 360)))
        actors.append({"model_id": spec.model_id, "pose": [round(v, 6) for v in pose], "rep_pts": []})
        placed.append((xy, radius, z + place.extents[2]))
    return {"index": episode.index, "split": episode.split, "seed": episode.seed, "actors": actors}


def write_episodes(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write an episode file (gzip when the name ends in .gz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(records, sort_keys=True).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Read an episode file written by write_episodes (or ManiSkill's own)."""
    path = Path(path)
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def default_episodes(catalog: ObjectSet, count: int = 200) -> list[dict[str, Any]]:
    """The episodes `VlkdPickClutter-v1` uses when given no file (DEFAULT_EPISODES holds them for the offline set)."""
    plan = clutter_plan({"id": catalog.names, "ood": []}, count, 3, 8, 0.0, 0.0, seed=0)
    return [episode_record(e, catalog) for e in plan]
