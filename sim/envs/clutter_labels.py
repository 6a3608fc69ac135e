"""Per-object labels of a settled clutter scene: present, visible pixel fraction, graspable.

The rule (also written into every clutter dataset card):
- present: the object rests on the table (its centre is above TABLE_Z_MIN, i.e. it did not fall off).
- visible_fraction: pixels of the object in the base camera's segmentation divided by the pixels it covers when
  every other clutter object is hidden (same camera, same pose): 1 = unoccluded, 0 = hidden or out of view.
- graspable: present, visible_fraction >= the threshold, and no other object rests on it. "B rests on A" when the
  contact force A exerts on B points upwards (z component >= SUPPORT_COS of its length) and carries at least
  SUPPORT_WEIGHT_SHARE of B's weight.
"""
from __future__ import annotations

from typing import Any

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


def scene_labels(env, names: list[list[str]], segmentation: torch.Tensor, threshold: float,
                 camera: str = "base_camera") -> list[list[dict[str, Any]]]:
    """Labels for each parallel scene's objects (in episode order, `names[i]` naming scene i's objects).

    `segmentation` is the camera's [N, H, W, 1] actor-id image of the current state; `env` is the unwrapped
    PickClutter env (ours or ManiSkill's), whose `selectable_target_objects[i]` lists scene i's objects.
    """
    objects = env.selectable_target_objects
    unoccluded = _unoccluded_pixels(env, objects, camera)
    labels = []
    for i, scene_names in enumerate(names):
        actors = objects[i]
        if len(actors) != len(scene_names):
            raise ValueError(f"scene {i} holds {len(actors)} objects but {len(scene_names)} names were given")
        seg = segmentation[i, ..., 0]
        supporting = _supporting(env, actors)
        rows = []
        for j, (name, actor) in enumerate(zip(scene_names, actors)):
            visible = int((seg == int(actor.per_scene_id[0])).sum())
            fraction = visible / unoccluded[i][j] if unoccluded[i][j] else 0.0
            present = bool(actor.pose.p[0, 2] > TABLE_Z_MIN)
            rows.append({
                "name": name, "present": present, "visible_fraction": round(min(fraction, 1.0), 4),
                "visible_pixels": visible, "supports_other": supporting[j],
                "graspable": present and fraction >= threshold and not supporting[j],
            })
        labels.append(rows)
    return labels


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


def _unoccluded_pixels(env, objects: list[list], camera: str) -> list[list[int]]:
    """Pixels of each object in `camera` when it is the only clutter object shown (one render per object slot)."""
    slots = max(len(scene) for scene in objects)
    counts = [[0] * len(scene) for scene in objects]
    sensor = env.scene.sensors[camera]
    for j in range(slots):
        restore = _hide(env, [a for scene in objects for k, a in enumerate(scene) if k != j])
        env.scene.update_render(update_sensors=True, update_human_render_cameras=False)
        sensor.capture()
        seg = sensor.get_obs(rgb=False, depth=False, position=False, segmentation=True)["segmentation"]
        restore()
        for i, scene in enumerate(objects):
            if j < len(scene):
                counts[i][j] = int((seg[i, ..., 0] == int(scene[j].per_scene_id[0])).sum())
    env.scene.update_render(update_sensors=True, update_human_render_cameras=False)
    return counts


def _hide(env, actors: list):
    """Hide actors from rendering only (visibility on CPU; a far-away pose on GPU, no physics step runs in
    between); returns the function that shows them again exactly as they were."""
    if not env.scene.gpu_sim_enabled:
        bodies = [e.find_component_by_type(sapien.render.RenderBodyComponent) for a in actors for e in a._objs]
        for body in bodies:
            body.visibility = 0.0

        def show() -> None:
            for body in bodies:
                body.visibility = 1.0
        return show
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
