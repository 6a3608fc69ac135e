"""Dataset cards: counts per label and split in CARD.md, and a montage PNG built from the images."""
import numpy as np

from sim.card import classification_card, write_montage
from sim.catalog import load_object_set
from vlkd_formats.image_codec import read_rgb, write_depth_png, write_rgb_png
from vlkd_formats.dataset_dir import DatasetInfo


def test_card_counts_and_montage(tmp_path):
    catalog = load_object_set("offline").select(["apple", "banana"])
    info = DatasetInfo("classification", ["apple", "banana"], {"apple": "a", "banana": "b"},
                       {"id": ["apple"], "ood": ["banana"]}, {"per_class": 2})
    rows = [{"label": "apple", "split": "train"}, {"label": "apple", "split": "val_on_train"},
            {"label": "banana", "split": "val"}, {"label": "banana", "split": "val"}]
    text = classification_card(info, rows, catalog)
    assert "| apple | id | 1 | 1 | 0 |" in text and "| banana | ood | 0 | 0 | 2 |" in text
    assert "procedural" in text and "per_class: 2" in text
    write_rgb_png(tmp_path / "a.png", np.full((32, 32, 3), 200, np.uint8))
    write_depth_png(tmp_path / "a_depth.png", np.full((32, 32, 1), 700, np.int32))
    write_montage(tmp_path, [(["a.png", "a_depth.png"], "apple"), (["a.png", "a.png"], "banana")], columns=2)
    montage = read_rgb(tmp_path / "montage.png")
    assert montage.shape[1] == 4 * 128 and montage.shape[0] > 128
