"""The ID/OOD split contract: one seeded algorithm (random / none / file) for the collectors, `vlkd split` and a
grasp model's `data.split.mode=half`."""
import pytest

from sim.ycb import paper_split, ycb_label
from vlkd_formats.split import read_split_file, split_labels

LABELS = [f"thing {i}" for i in range(40)]


def test_random_split_is_seeded_half_half():
    split = split_labels(LABELS, "random", 0.5, seed=3)
    assert len(split["id"]) == len(split["ood"]) == 20
    assert set(split["id"]).isdisjoint(split["ood"])
    assert split == split_labels(LABELS, "random", 0.5, seed=3)
    assert split != split_labels(LABELS, "random", 0.5, seed=4)
    assert split["id"] + split["ood"] != LABELS and sorted(split["id"] + split["ood"]) == sorted(LABELS)


def test_random_split_keeps_its_numbers():
    # The collectors (and so `vlkd demo`'s numbers) depend on these exact draws (those of the former sim.plan).
    assert split_labels(["a", "b", "c", "d", "e", "f"], "random", 0.5, seed=0) == \
        {"id": ["c", "d", "f"], "ood": ["a", "b", "e"]}
    assert split_labels(LABELS, "random", 0.5, seed=7)["ood"][:5] == ["thing 1", "thing 2", "thing 5", "thing 7",
                                                                      "thing 8"]
    assert len(split_labels(LABELS[:3], "random", 0.5, 0)["ood"]) == 2  # round(1.5) = 2 (round half to even)
    assert len(split_labels(LABELS[:5], "random", 0.5, 0)["ood"]) == 2  # round(2.5) = 2
    assert len(split_labels(LABELS[:2], "random", 0.9, 0)["id"]) == 1  # at least one label stays in distribution


def test_split_none_and_file(tmp_path):
    assert split_labels(LABELS, "none", 0.5, 0) == {"id": LABELS, "ood": []}
    path = tmp_path / "split.yaml"
    path.write_text("id: [thing 1, thing 0]\nood: [thing 5]\n")
    assert split_labels(LABELS, str(path), 0.5, 0) == {"id": ["thing 0", "thing 1"], "ood": ["thing 5"]}
    path.write_text("id: [thing 1]\nood: [no such thing]\n")
    with pytest.raises(ValueError, match="unknown objects"):
        split_labels(LABELS, str(path), 0.5, 0)
    with pytest.raises(ValueError, match="at least 2 labels"):
        split_labels(LABELS[:1], "random", 0.5, 0)


def test_split_file_errors(tmp_path):
    path = tmp_path / "split.json"
    with pytest.raises(FileNotFoundError):
        read_split_file(path)
    for text, message in (("{", "cannot be parsed"), ('{"id": "a"}', "must hold"),
                          ('{"id": ["a"], "ood": ["a"]}', "in both id and ood"), ('{"id": []}', "no in-distribution")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_split_file(path)
    path.write_text('{"id": ["b", "a"], "ood": ["c"]}')
    assert read_split_file(path) == {"id": ["b", "a"], "ood": ["c"]}  # file order without labels


def test_the_papers_ycb_split():
    split = paper_split()
    assert len(split["id"]) == 14 and len(split["ood"]) == 12
    assert split["id"][0] == ycb_label("002_master_chef_can") and "rubiks cube" in split["ood"]
