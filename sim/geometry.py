"""Object geometry without a simulator: bounding boxes, and where an object's bottom centre lies in its own frame.

An actor keeps its model's origin (as ManiSkill's YCB builder does); `Placement.offset` is the translation from
the bottom centre of the (up-turned, scaled) model to that origin, so `rest_pose` can stand any object on a surface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.objects import MeshRef, ObjectSpec, Part

# Rotation (w, x, y, z) that turns the named mesh axis into +z.
_S = math.sqrt(0.5)
UP_QUATS = {
    "+z": (1.0, 0.0, 0.0, 0.0),
    "-z": (0.0, 1.0, 0.0, 0.0),
    "+y": (_S, _S, 0.0, 0.0),
    "-y": (_S, -_S, 0.0, 0.0),
    "+x": (_S, 0.0, -_S, 0.0),
    "-x": (_S, 0.0, _S, 0.0),
}


@dataclass(frozen=True)
class Placement:
    """How a category sits in its canonical frame: uniform mesh scale, rotation, translation, resulting extents (m)."""

    scale: float
    quat: tuple[float, float, float, float]
    offset: tuple[float, float, float]
    extents: tuple[float, float, float]


def quat_to_matrix(q: tuple[float, float, float, float]) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def part_bounds(part: Part) -> tuple[np.ndarray, np.ndarray]:
    """Exact axis-aligned bounds of a primitive part in the object's authored frame."""
    rot = quat_to_matrix(part.quat)
    if part.shape == "box":
        half = np.abs(rot) @ np.asarray(part.dims)
    elif part.shape == "sphere":
        half = np.full(3, part.dims[0])
    else:
        radius, half_length = part.dims
        axis = np.abs(rot[:, 2])
        rim = radius * np.sqrt(np.clip(1 - axis**2, 0, 1)) if part.shape == "cylinder" else np.full(3, radius)
        half = half_length * axis + rim
    centre = np.asarray(part.pos)
    return centre - half, centre + half


@lru_cache(maxsize=256)
def mesh_file_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of a mesh file's vertices; ValueError when the file cannot be read as a mesh."""
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise ValueError(f"cannot read mesh {path}: {err}") from err
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))))
    if len(vertices) < 4 or not np.isfinite(vertices).all():
        raise ValueError(f"cannot read mesh {path}: it has {len(vertices)} usable vertices (need a 3-D surface)")
    return vertices.min(axis=0), vertices.max(axis=0)


def mesh_placement(mesh: MeshRef, size: float) -> Placement:
    """Scale a mesh so its largest extent is `size`, turn its `up` axis to +z and put its bottom centre at 0."""
    lo, hi = mesh_file_bounds(mesh.visual)
    quat = UP_QUATS[mesh.up]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    turned = corners @ quat_to_matrix(quat).T
    extents = turned.max(axis=0) - turned.min(axis=0)
    scale = size / float(extents.max())
    rlo, rhi = turned.min(axis=0) * scale, turned.max(axis=0) * scale
    offset = (-(rlo[0] + rhi[0]) / 2, -(rlo[1] + rhi[1]) / 2, -rlo[2])
    return Placement(scale, quat, tuple(float(v) for v in offset), tuple(float(v) for v in extents * scale))


def parts_placement(parts: tuple[Part, ...]) -> Placement:
    """Translation that puts a procedural object's bottom centre at the origin."""
    bounds = [part_bounds(p) for p in parts]
    lo = np.min([b[0] for b in bounds], axis=0)
    hi = np.max([b[1] for b in bounds], axis=0)
    offset = (-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2])
    return Placement(1.0, UP_QUATS["+z"], tuple(float(v) for v in offset), tuple(float(v) for v in hi - lo))


def placement(spec: ObjectSpec) -> Placement:
    """The canonical placement of a category (procedural parts or a mesh file)."""
    return parts_placement(spec.parts) if spec.parts else mesh_placement(spec.mesh, spec.size)


def rest_pose(place: Placement, scale: float, x: float, y: float, z: float, yaw_deg: float) -> list[float]:
    """[x, y, z, qw, qx, qy, qz] of the actor origin putting the bottom centre at (x, y, z), turned by `yaw_deg`."""
    half = math.radians(yaw_deg) / 2
    quat = (math.cos(half), 0.0, 0.0, math.sin(half))
    origin = np.array([x, y, z]) + quat_to_matrix(quat) @ (np.asarray(place.offset) * scale)
    return [float(v) for v in origin] + list(quat)


def check_readable(specs: tuple[ObjectSpec, ...]) -> None:
    """Load every mesh's bounds once so an unreadable file fails before any rendering starts."""
    for spec in specs:
        if spec.mesh is not None:
            for path in (spec.mesh.visual, spec.mesh.collision):
                if path is not None:
                    try:
                        mesh_file_bounds(path)
                    except ValueError as err:
                        raise ValueError(f"object {spec.name!r}: {err}") from err
