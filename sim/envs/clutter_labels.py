"""Per-object labels of a settled clutter scene: present, visible pixel fraction, graspable.

The rule (also written into every clutter dataset card):
- present: the object rests on the table (its centre is above TABLE_Z_MIN, i.e. it did not fall off).
- visible_fraction: pixels of the object in the base camera's segmentation divided by the pixels it covers when
  every other clutter object is hidden (same camera, same pose): 1 = unoccluded, 0 = hidden or out of view.
  Measured per camera (each base-camera view of a scene has its own); `bbox` bounds the visible pixels.
- graspable: present, visible_fraction >= the threshold, and no other object rests on it. "B rests on A" when the
  contact force A exerts on B points upwards (z component >= SUPPORT_COS of its length) and carries at least
  SUPPORT_WEIGHT_SHARE of B's weight.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sapien
import torch

TABLE_Z_MIN = -0.02
SUPPORT_COS = 0.7
SUPPORT_WEIGHT_SHARE = 0.25
GRAVITY = 9.81
RULE = (f"graspable = present (centre above z = {TABLE_Z_MIN} m, on the table) AND visible_fraction >= threshold "
        "(object pixels in the base camera / its pixels with all other objects hidden) AND no other object rests on "
        f"it (a contact force from it pointing up, z >= {SUPPORT_COS} of its length, carrying >= "
        f"{SUPPORT_WEIGHT_SHARE:.0%} of the upper object's weight).")


def scene_labels(env, names: list[list[str]], segmentations: Mapping[str, torch.Tensor],
                 threshold: float) -> dict[str, list[list[dict[str, Any]]]]:
    """Labels of each parallel scene's objects (in episode order, `names[i]` naming scene i's objects) as seen by
    each camera: `result[camera][i]` lists scene i's objects.

    `segmentations` maps camera names to their [N, H, W, 1] actor-id images of the current state; `env` is the
    unwrapped PickClutter env (ours or ManiSkill's), whose `selectable_target_objects[i]` lists scene i's objects.
    Visible fractions and boxes are per camera; `present` and `supports_other` are the scene's.
    """
    objects = env.selectable_target_objects
    for i, scene_names in enumerate(names):
        if len(objects[i]) != len(scene_names):
            raise ValueError(f"scene {i} holds {len(objects[i])} objects but {len(scene_names)} names were given")
    unoccluded = _unoccluded_pixels(env, objects, list(segmentations))
    supporting = [_supporting(env, actors) for actors in objects]
    labels = {}
    for camera, segmentation in segmentations.items():
        labels[camera] = []
        for i, (scene_names, actors) in enumerate(zip(names, objects)):
            mask = object_mask(segmentation[i, ..., 0], actors)
            rows = []
            for j, (name, actor) in enumerate(zip(scene_names, actors)):
                visible = int((mask == j + 1).sum())
                full = unoccluded[camera][i][j]
                fraction = visible / full if full else 0.0
                present = bool(actor.pose.p[0, 2] > TABLE_Z_MIN)
                rows.append({
                    "name": name, "present": present, "visible_fraction": round(min(fraction, 1.0), 4),
                    "visible_pixels": visible, "supports_other": supporting[i][j],
                    "graspable": present and fraction >= threshold and not supporting[i][j],
                    "bbox": mask_bbox(mask, j + 1),
                })
            labels[camera].append(rows)
    return labels


def object_mask(segmentation: torch.Tensor, actors: list) -> np.ndarray:
    """HxW uint8 image of one scene: k (1..len(actors)) where the k-th actor is seen, 0 elsewhere.

    `segmentation` is that scene's HxW (or HxWx1) actor-id image."""
    if len(actors) > 255:
        raise ValueError(f"{len(actors)} objects do not fit an 8-bit mask (at most 255)")
    seg = segmentation.reshape(segmentation.shape[0], segmentation.shape[1])
    mask = torch.zeros(seg.shape, dtype=torch.uint8, device=seg.device)
    for k, actor in enumerate(actors, start=1):
        mask[seg == int(actor.per_scene_id[0])] = k
    return mask.cpu().numpy()


def mask_bbox(mask: np.ndarray, value: int) -> list[int] | None:
    """[x_min, y_min, x_max, y_max] (pixels, inclusive) of the pixels equal to `value`; None when there are none."""
    ys, xs = np.nonzero(mask == value)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _supporting(env, actors: list) -> list[bool]:
    """For each object, whether another object rests on it (see module docstring)."""
    result = [False] * len(actors)
    for a, lower in enumerate(actors):
        for b, upper in enumerate(actors):
            if a == b:
                continue
            force = env.scene.get_pairwise_contact_forces(upper, lower)[0]
            weight = float(upper.mass[0]) * GRAVITY
            if force[2] >= SUPPORT_COS * torch.linalg.norm(force) and force[2] >= SUPPORT_WEIGHT_SHARE * weight > 0:
                result[a] = True
    return result


def _unoccluded_pixels(env, objects: list[list], cameras: list[str]) -> dict[str, list[list[int]]]:
    """Pixels of each object in each camera when it is the only clutter object shown: one render per object slot,
    captured by every camera (`result[camera][scene][object]`).

    On CPU the robot, which costs most of a software render, is left out of those renders and put back by depth: an
    object pixel counts unless the robot, rendered once per camera with every object hidden, is nearer there."""
    slots = max(len(scene) for scene in objects)
    counts = {camera: [[0] * len(scene) for scene in objects] for camera in cameras}
    robot = [] if env.scene.gpu_sim_enabled or env.agent is None else _render_bodies(env.agent.robot.links)
    if robot:
        restore = _hide(env, [a for scene in objects for a in scene])
        robot_depth = {c: obs["depth"][..., 0] for c, obs in _render(env, cameras).items()}
        restore()
        _set_visibility(robot, 0.0)
    try:
        for j in range(slots):
            restore = _hide(env, [a for scene in objects for k, a in enumerate(scene) if k != j])
            views = _render(env, cameras)
            restore()
            for camera, obs in views.items():
                for i, scene in enumerate(objects):
                    if j < len(scene):
                        seen = obs["segmentation"][i, ..., 0] == int(scene[j].per_scene_id[0])
                        if robot:
                            near = robot_depth[camera][i]
                            seen &= ~((near > 0) & (near < obs["depth"][i, ..., 0]))  # depth 0: nothing there
                        counts[camera][i][j] = int(seen.sum())
    finally:
        _set_visibility(robot, 1.0)
    env.scene.update_render(update_sensors=True, update_human_render_cameras=False)
    return counts


def _render(env, cameras: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Depth and segmentation of the current render state, captured by each camera."""
    sensors = {camera: env.scene.sensors[camera] for camera in cameras}
    env.scene.update_render(update_sensors=True, update_human_render_cameras=False)
    for sensor in sensors.values():
        sensor.capture()
    return {c: s.get_obs(rgb=False, depth=True, position=False, segmentation=True) for c, s in sensors.items()}


def _render_bodies(links: list) -> list:
    """The render bodies of articulation links (CPU sim)."""
    bodies = [o.entity.find_component_by_type(sapien.render.RenderBodyComponent) for link in links for o in link._objs]
    return [b for b in bodies if b is not None]


def _set_visibility(bodies: list, visibility: float) -> None:
    for body in bodies:
        body.visibility = visibility


def _hide(env, actors: list):
    """Hide actors from rendering only (visibility on CPU; a far-away pose on GPU, no physics step runs in
    between); returns the function that shows them again exactly as they were."""
    if not env.scene.gpu_sim_enabled:
        bodies = [e.find_component_by_type(sapien.render.RenderBodyComponent) for a in actors for e in a._objs]
        _set_visibility(bodies, 0.0)
        return lambda: _set_visibility(bodies, 1.0)
    saved = [(actor, actor.pose.raw_pose.clone()) for actor in actors]
    for actor, pose in saved:
        far = pose.clone()
        far[..., 2] -= 1000.0
        actor.pose = far
    env.scene._gpu_apply_all()
    env.scene._gpu_fetch_all()

    def show_gpu() -> None:
        for actor, pose in saved:
            actor.pose = pose
        env.scene._gpu_apply_all()
        env.scene._gpu_fetch_all()
    return show_gpu
