"""Object sets: the offline set's size and naming, user YAML files, and the errors for bad entries."""
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sim.catalog import load_object_set, load_object_set_yaml
from vlkd_formats.dataset_dir import label_slug, slug_label


def _box_obj(path: Path, extents=(0.2, 0.1, 0.05)) -> Path:
    trimesh.creation.box(extents=extents).export(path)
    return path


def test_offline_set_has_enough_named_described_categories():
    catalog = load_object_set("offline")
    assert len(catalog.objects) >= 30
    assert len(set(catalog.names)) == len(catalog.names)
    for obj in catalog.objects:
        assert obj.description and obj.name == obj.name.lower()
        assert slug_label(label_slug(obj.name)) == obj.name
        assert obj.size > 0 and obj.license
    meshes = [o for o in catalog.objects if o.mesh is not None]
    assert {o.source for o in meshes} == {"pybullet", "robosuite"}
    assert all(o.mesh.visual.is_file() for o in meshes)


def test_user_yaml_with_relative_mesh(tmp_path):
    _box_obj(tmp_path / "brick.obj")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nobjects:\n  - {name: garden brick, description: a grey brick, mesh: brick.obj, size: 0.2}\n")
    catalog = load_object_set(str(tmp_path / "mine.yaml"))
    spec = catalog.get("garden brick")
    assert spec.mesh.visual == tmp_path / "brick.obj" and spec.object_id == "mine/garden_brick"


def test_combined_sets_and_duplicates(tmp_path):
    _box_obj(tmp_path / "b.obj")
    (tmp_path / "extra.yaml").write_text("objects:\n  - {name: new can, description: a can, mesh: b.obj}\n")
    combined = load_object_set(f"offline,{tmp_path / 'extra.yaml'}")
    assert "new can" in combined.names and "coffee mug" in combined.names
    (tmp_path / "dupe.yaml").write_text("objects:\n  - {name: coffee mug, description: again, mesh: b.obj}\n")
    with pytest.raises(ValueError, match="unique"):
        load_object_set(f"offline,{tmp_path / 'dupe.yaml'}")


@pytest.mark.parametrize("entry, message", [
    ("{name: Coffee_Mug, description: x, mesh: b.obj}", "lowercase"),
    ("{name: mug, mesh: b.obj}", "description"),
    ("{name: mug, description: x}", "exactly one"),
    ("{name: mug, description: x, mesh: missing.obj}", "not found"),
    ("{name: mug, description: x, mesh: b.txt}", "not a mesh file"),
    ("{name: mug, description: x, mesh: b.obj, up: sideways}", "up"),
    ("{name: mug, description: x, mesh: b.obj, size: -1}", "positive"),
    ("{name: mug, description: x, parts: [{shape: cone, radius: 1}]}", "shape"),
    ("{name: mug, description: x, parts: [{shape: box, half_size: [1, 1]}]}", "half_size"),
    ("{name: mug, description: x, parts: [{shape: sphere, radius: 0.1, color: [2, 0, 0]}]}", "color"),
])
def test_bad_entries_name_the_problem(tmp_path, entry, message):
    _box_obj(tmp_path / "b.obj")
    (tmp_path / "b.txt").write_text("x")
    (tmp_path / "set.yaml").write_text(f"objects:\n  - {entry}\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_object_set_yaml(tmp_path / "set.yaml")


def test_zero_objects_and_unknown_names(tmp_path):
    (tmp_path / "empty.yaml").write_text("objects: []\n")
    with pytest.raises(ValueError, match="zero objects"):
        load_object_set_yaml(tmp_path / "empty.yaml")
    with pytest.raises(ValueError, match="unknown object 'cofee mug'.*valid names: .*coffee mug"):
        load_object_set("offline").select(["cofee mug"])
    with pytest.raises(ValueError, match="unknown object set"):
        load_object_set("nonsense")
    with pytest.raises(FileNotFoundError):
        load_object_set(str(tmp_path / "absent.yaml"))


def test_missing_mesh_package_says_what_to_install(tmp_path):
    (tmp_path / "set.yaml").write_text(
        "objects:\n  - {name: thing, description: x, mesh: 'pkg://no_such_pkg_xyz/a.obj'}\n")
    with pytest.raises(FileNotFoundError, match="requirements-assets.txt"):
        load_object_set_yaml(tmp_path / "set.yaml")


def test_select_keeps_order():
    catalog = load_object_set("offline").select(["banana", "apple"])
    assert catalog.names == ["banana", "apple"]
    assert np.isclose(catalog.get("banana").size, load_object_set("offline").get("banana").size)
