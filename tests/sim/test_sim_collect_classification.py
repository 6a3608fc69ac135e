"""Classification collection rendering real frames: layout, manifest, card, determinism, resume after a full disk."""
import errno
import json

import numpy as np
import pytest

from sim.collect_classification import collect_classification
from sim.config import ClassificationConfig
from sim.shards import done_indices
from vlkd_formats import image_codec as image_io
from vlkd_formats.dataset_dir import SPLITS, read_dataset_info, read_manifest
from vlkd_formats.errors import StorageError
from vlkd_formats.image_codec import read_rgb

pytestmark = pytest.mark.sim
LABELS = ["coffee mug", "banana", "dice", "soda can"]


def _config(**values) -> ClassificationConfig:
    return ClassificationConfig(**{"labels": LABELS, "per_class": 3, "image_size": 64, "val_fraction": 0.34,
                                   "montage_size": 4, **values}).validate()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "data"
    collect_classification(_config(), out)
    return out


def test_layout_manifest_and_info(dataset):
    info = read_dataset_info(dataset)
    assert info.kind == "classification" and info.labels == LABELS
    assert len(info.split["id"]) == 2 and len(info.split["ood"]) == 2
    assert info.descriptions["coffee mug"].startswith("a blue ceramic")
    rows = list(read_manifest(dataset))
    assert len(rows) == 12 and [r["index"] for r in rows] == list(range(12))
    for row in rows:
        assert row["split"] in SPLITS and row["image"].startswith(f"{row['split']}/{row['label'].replace(' ', '_')}/")
        assert row["split"] == ("val" if row["label"] in info.split["ood"] else row["split"])
        image = read_rgb(dataset / row["image"])
        assert image.shape == (64, 64, 3) and image.std() > 5
        assert row["camera"]["width"] == 64 and "lighting" in row["render"] and row["object_id"].startswith("offline/")
    for label in info.split["id"]:
        slug = label.replace(" ", "_")
        assert len(list((dataset / "train" / slug).glob("*.png"))) == 2
        assert len(list((dataset / "val_on_train" / slug).glob("*.png"))) == 1
    card = (dataset / "CARD.md").read_text()
    assert "| coffee mug |" in card and "pybullet" in card
    assert read_rgb(dataset / "montage.png").shape[0] > 64


def test_training_module_reads_it(dataset):
    data_module = pytest.importorskip("training.data")
    data = data_module.load_distill_data(data_module.DataConfig(root=str(dataset)))
    assert len(data.train) == 4 and len(data.x_id) == 2 and len(data.x_ood) == 6


def test_rerun_resumes_nothing_and_same_seed_same_image(dataset, tmp_path):
    before = (dataset / "manifest.jsonl").read_text()
    collect_classification(_config(), dataset)
    assert (dataset / "manifest.jsonl").read_text() == before
    other = tmp_path / "none"
    collect_classification(_config(labels=["banana"], per_class=1, split="none", val_fraction=0.0), other)
    row = next(r for r in read_manifest(dataset) if r["label"] == "banana" and r["rank"] == 0)
    assert np.array_equal(read_rgb(other / "train/banana/banana_00000.png"), read_rgb(dataset / row["image"]))
    assert not (other / "val").exists()


def test_full_disk_keeps_manifest_consistent_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "d"
    real, calls = image_io.atomic_write, []

    def fills_up(path, write):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(image_io, "atomic_write", fills_up)
    with pytest.raises(StorageError, match="disk full"):  # the codec's error (sim's CollectionError is one too)
        collect_classification(_config(per_class=2), out)
    assert done_indices(out) == {0, 1} and not (out / "manifest.jsonl").exists()
    monkeypatch.setattr(image_io, "atomic_write", real)
    collect_classification(_config(per_class=2), out)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(8)) and all((out / r["image"]).is_file() for r in rows)
