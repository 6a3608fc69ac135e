"""The dataset-dir format: dataset.json validation, the crash-safe manifest and the episode layout."""
from pathlib import Path

import pytest

from vlkd_formats.dataset_dir import (DatasetFormatError, DatasetInfo, ManifestWriter, episode_view_path, label_slug,
                                      read_dataset_info, read_manifest, slug_label, write_dataset_info)
from vlkd_formats.errors import VlkdError


def test_dataset_info_round_trips_and_is_validated(tmp_path: Path) -> None:
    info = DatasetInfo(kind="clutter", labels=["apple", "coffee mug"], descriptions={"apple": "a red fruit"},
                       split={"id": ["apple"], "ood": ["coffee mug"]})
    write_dataset_info(tmp_path, info)
    assert read_dataset_info(tmp_path) == info
    with pytest.raises(DatasetFormatError, match="both in-distribution and OOD"):
        write_dataset_info(tmp_path, DatasetInfo(kind="clutter", labels=["a", "b"], split={"id": ["a"], "ood": ["a"]}))
    with pytest.raises(DatasetFormatError, match="kind 'video' is not one of"):
        DatasetInfo(kind="video", labels=["a"]).validate()
    with pytest.raises(VlkdError, match="is not a vlkd dataset dir"):
        read_dataset_info(tmp_path / "nowhere")


def test_the_manifest_ignores_a_torn_last_line_and_appends_after_it(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path) as writer:
        writer.append({"episode": 0})
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"episode": 1')  # a crash in the middle of a line
    assert list(read_manifest(tmp_path)) == [{"episode": 0}]
    with ManifestWriter(tmp_path) as writer:
        writer.append({"episode": 2})
    assert list(read_manifest(tmp_path)) == [{"episode": 0}, {"episode": 2}]


def test_episode_views_and_label_folders() -> None:
    assert episode_view_path("episodes/000003", "base_depth") == Path("episodes/000003/base_depth.png")
    with pytest.raises(DatasetFormatError, match="view 'left_rgb' is not one of"):
        episode_view_path("episodes/000003", "left_rgb")
    assert label_slug("coffee mug") == "coffee_mug" and slug_label("coffee_mug") == "coffee mug"
