"""Clutter episode files: ManiSkill's format, drop poses inside the work area, the shipped default up to date."""
import numpy as np

from sim.catalog import load_object_set
from sim.clutter_episodes import (
    DEFAULT_EPISODES,
    MAX_TOP,
    WORK_AREA,
    default_episodes,
    episode_record,
    read_episodes,
    write_episodes,
)
from sim.geometry import placement
from sim.plan import ClutterEpisode


def test_record_format_and_work_area():
    catalog = load_object_set("offline")
    episode = ClutterEpisode(3, "val", ("coffee mug", "banana", "dice", "cereal box"), 1234)
    record = episode_record(episode, catalog)
    assert record["index"] == 3 and record["split"] == "val"
    assert [a["model_id"] for a in record["actors"]] == ["coffee_mug", "banana", "dice", "cereal_box"]
    for actor in record["actors"]:
        assert len(actor["pose"]) == 7 and actor["rep_pts"] == []
        assert np.isclose(np.linalg.norm(actor["pose"][3:]), 1.0)
    assert record == episode_record(episode, catalog)


def test_shipped_default_episodes_match_the_generator(tmp_path):
    catalog = load_object_set("offline")
    regenerated = default_episodes(catalog)
    assert read_episodes(DEFAULT_EPISODES) == regenerated
    write_episodes(tmp_path / "e.json", regenerated[:3])
    assert read_episodes(tmp_path / "e.json") == regenerated[:3]
    (x_lo, x_hi), (y_lo, y_hi) = WORK_AREA
    for record in regenerated:
        for actor in record["actors"]:
            spec = catalog.by_model_id(actor["model_id"])
            assert spec.name in catalog.names
            assert actor["pose"][2] < MAX_TOP + max(placement(spec).extents)
