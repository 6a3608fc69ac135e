"""SAPIEN actor builders for catalogue objects (in each model's own frame, see sim.geometry), the randomised
table backdrop and randomised lights."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import sapien
import sapien.render

from sim.catalog import resolve_asset_path
from sim.geometry import placement
from sim.objects import Look, ObjectSpec, Part
from sim.randomization import TEXTURE_URI, Backdrop, Lighting, Variation

# SAPIEN cylinders and capsules lie along x; the catalogue's lie along z.
_X_TO_Z = sapien.Pose(q=[np.sqrt(0.5), 0.0, -np.sqrt(0.5), 0.0])
# Parts thinner than this (decals, rims) are visual only: they would only add jitter to contacts.
MIN_COLLISION_HALF_SIZE = 0.0015
TABLE_HALF_SIZE = 1.5
FLOOR_DEPTH = 0.75


def render_material(look: Look, variation: Variation) -> sapien.render.RenderMaterial:
    """A SAPIEN material for `look` with the instance's colour variation applied."""
    color = variation.color(look.color)
    emission = [*color[:3], look.emission] if look.emission > 0 else [0.0, 0.0, 0.0, 0.0]
    return sapien.render.RenderMaterial(base_color=color, roughness=look.roughness, metallic=look.metallic,
                                        emission=emission)


def object_builder(scene, spec: ObjectSpec, variation: Variation, collision: bool = True):
    """An ActorBuilder in the model's own frame (turned z-up), scaled by `variation.scale` (see geometry.rest_pose)."""
    builder = scene.create_actor_builder()
    k = variation.scale
    if spec.parts:
        for part in spec.parts:
            _add_part(builder, part, k, variation, collision)
        return builder
    mesh = spec.mesh
    place = placement(spec)
    pose = sapien.Pose(q=place.quat)
    scale = [place.scale * k] * 3
    material = render_material(mesh.look, variation) if mesh.look is not None else None
    builder.add_visual_from_file(str(mesh.visual), pose=pose, scale=scale, material=material)
    if collision:
        source = str(mesh.collision or mesh.visual)
        if mesh.convex_parts:
            builder.add_multiple_convex_collisions_from_file(source, pose=pose, scale=scale)
        else:
            builder.add_convex_collision_from_file(source, pose=pose, scale=scale)
    return builder


def _add_part(builder, part: Part, k: float, variation: Variation, collision: bool) -> None:
    pose = sapien.Pose(p=np.asarray(part.pos) * k, q=part.quat)
    dims = [d * k for d in part.dims]
    material = render_material(part.look, variation)
    solid = collision and min(dims) >= MIN_COLLISION_HALF_SIZE
    if part.shape == "box":
        builder.add_box_visual(pose=pose, half_size=dims, material=material)
        if solid:
            builder.add_box_collision(pose=pose, half_size=dims)
    elif part.shape == "sphere":
        builder.add_sphere_visual(pose=pose, radius=dims[0], material=material)
        if solid:
            builder.add_sphere_collision(pose=pose, radius=dims[0])
    else:
        shape_pose = pose * _X_TO_Z
        add_visual = builder.add_cylinder_visual if part.shape == "cylinder" else builder.add_capsule_visual
        add_visual(pose=shape_pose, radius=dims[0], half_length=dims[1], material=material)
        if solid:
            add_solid = builder.add_cylinder_collision if part.shape == "cylinder" else builder.add_capsule_collision
            add_solid(pose=shape_pose, radius=dims[0], half_length=dims[1])


@cache
def _texture(name: str) -> sapien.render.RenderTexture2D:
    """Load a table texture once per process (textures outlive the scenes that use them)."""
    return sapien.render.RenderTexture2D(filename=str(resolve_asset_path(TEXTURE_URI.format(name), Path())))


def build_backdrop(scene, backdrop: Backdrop, scene_idxs: list[int], name: str):
    """A static table top at z = 0 (collision plane plus textured or plain visual) and a floor below it."""
    builder = scene.create_actor_builder()
    builder.add_box_collision(pose=sapien.Pose(p=[0, 0, -0.01]), half_size=[TABLE_HALF_SIZE, TABLE_HALF_SIZE, 0.01])
    material = sapien.render.RenderMaterial(base_color=[*backdrop.table_color, 1.0], roughness=backdrop.table_roughness)
    if backdrop.table_texture is not None:
        material.base_color = [1.0, 1.0, 1.0, 1.0]
        material.base_color_texture = _texture(backdrop.table_texture)
        builder.add_plane_repeated_visual(pose=sapien.Pose(p=[0, 0, 1e-4], q=[0, 1, 0, 0]),
                                          half_size=[TABLE_HALF_SIZE, TABLE_HALF_SIZE], mat=material,
                                          texture_repeat=[2, 2])
    builder.add_box_visual(pose=sapien.Pose(p=[0, 0, -0.01]), half_size=[TABLE_HALF_SIZE, TABLE_HALF_SIZE, 0.01],
                           material=material if backdrop.table_texture is None else
                           sapien.render.RenderMaterial(base_color=[*backdrop.table_color, 1.0]))
    builder.add_box_visual(pose=sapien.Pose(p=[0, 0, -FLOOR_DEPTH]), half_size=[10, 10, 0.01],
                           material=sapien.render.RenderMaterial(base_color=[*backdrop.floor_color, 1.0]))
    builder.set_scene_idxs(scene_idxs)
    builder.initial_pose = sapien.Pose()
    return builder.build_static(name=name)


def add_lights(scene, lighting: Lighting, scene_idx: int) -> None:
    """Give one sub-scene of a ManiSkill scene `lighting`'s ambient level and its key and fill lights."""
    scene.sub_scenes[scene_idx].render_system.ambient_light = list(lighting.ambient)
    scene.add_directional_light(list(lighting.key_direction), list(lighting.key_color), scene_idxs=[scene_idx])
    scene.add_directional_light(list(lighting.fill_direction), list(lighting.fill_color), scene_idxs=[scene_idx])
