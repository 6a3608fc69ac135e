"""YCB route: missing assets fail at once with the download command (never ManiSkill's prompt); present assets load."""
import json

import pytest
import trimesh
from mani_skill.utils.assets import DATA_SOURCES

from sim.catalog import load_object_set
from sim.errors import SimUnavailableError
from sim.ycb import PAPER_SPLIT, ycb_label


@pytest.fixture
def ycb_root(tmp_path, monkeypatch):
    monkeypatch.setattr(DATA_SOURCES["ycb"], "output_dir", tmp_path)
    return tmp_path / DATA_SOURCES["ycb"].target_path


def test_missing_assets_name_the_command(ycb_root, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(SimUnavailableError, match="python -m mani_skill.utils.download_asset ycb -y"):
        load_object_set("ycb")


def test_installed_assets_become_an_object_set(ycb_root):
    info = {}
    for model_id in ("011_banana", "077_rubiks_cube"):
        folder = ycb_root / "models" / model_id
        folder.mkdir(parents=True)
        trimesh.creation.box(extents=(0.1, 0.05, 0.04)).export(folder / "textured.obj")
        trimesh.creation.box(extents=(0.1, 0.05, 0.04)).export(folder / "collision.ply")
        info[model_id] = {"bbox": {"min": [-0.05, -0.025, -0.02], "max": [0.05, 0.025, 0.02]}, "scales": [2.0]}
    (ycb_root / "info_pick_v0.json").write_text(json.dumps(info))
    catalog = load_object_set("ycb")
    assert catalog.names == ["banana", "rubiks cube"]
    spec = catalog.get("rubiks cube")
    assert spec.model_id == "077_rubiks_cube" and abs(spec.size - 0.2) < 1e-9 and "CC BY" in spec.license


def test_paper_split_names_ycb_labels():
    text = PAPER_SPLIT.read_text()
    assert "power drill" in text and ycb_label("043_phillips_screwdriver") == "phillips screwdriver"
