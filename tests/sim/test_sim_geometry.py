"""Bounds of primitives and meshes, the canonical placement, and rest poses."""
import numpy as np
import pytest
import trimesh

from sim.catalog import rpy_to_quat
from sim.geometry import check_readable, mesh_placement, part_bounds, parts_placement, quat_to_matrix, rest_pose
from sim.objects import Look, MeshRef, ObjectSpec, Part


def test_lying_cylinder_bounds():
    part = Part("cylinder", (0.01, 0.1), (0, 0, 0.01), rpy_to_quat((0, 90, 0)), Look())
    lo, hi = part_bounds(part)
    assert np.allclose(hi - lo, [0.2, 0.02, 0.02], atol=1e-9)


def test_parts_placement_puts_bottom_centre_at_origin():
    parts = (Part("sphere", (0.05,), (0.1, 0.0, 0.3)), Part("box", (0.05, 0.05, 0.05), (0.2, 0.0, 0.3)))
    place = parts_placement(parts)
    assert np.allclose(place.offset, [-0.15, 0.0, -0.25])
    assert np.allclose(place.extents, [0.2, 0.1, 0.1])


def test_mesh_placement_scales_and_turns_up(tmp_path):
    path = tmp_path / "tall_y.obj"
    trimesh.creation.box(extents=(0.1, 0.4, 0.2)).export(path)
    place = mesh_placement(MeshRef(path, up="+y"), size=0.2)
    assert np.isclose(place.scale, 0.5)
    assert np.allclose(place.extents, [0.05, 0.1, 0.2])
    assert np.isclose(place.offset[2], 0.1)


def test_rest_pose_stands_object_on_surface():
    parts = (Part("box", (0.1, 0.02, 0.03), (0.5, 0.0, 0.0)),)
    place = parts_placement(parts)
    pose = rest_pose(place, 2.0, 0.0, 0.0, 0.0, 90.0)
    rot = quat_to_matrix(tuple(pose[3:]))
    centre = np.asarray(pose[:3]) + rot @ (np.asarray(parts[0].pos) * 2.0)
    assert np.allclose(centre, [0.0, 0.0, 0.06], atol=1e-9)


def test_unreadable_mesh_is_reported(tmp_path):
    bad = tmp_path / "broken.obj"
    bad.write_text("this is not a mesh\n")
    spec = ObjectSpec("broken thing", "x", "user", 0.1, mesh=MeshRef(bad))
    with pytest.raises(ValueError, match="broken thing.*cannot read mesh"):
        check_readable((spec,))
