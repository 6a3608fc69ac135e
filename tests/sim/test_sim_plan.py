"""Sample plans: seeded, balanced, independent of worker count and collection size (the splits: tests/vlkd_formats)."""
import pytest

from sim.plan import classification_plan, clutter_plan, sample_seed
from vlkd_formats.split import split_labels

LABELS = [f"thing {i}" for i in range(40)]


def test_classification_plan_counts_and_splits():
    split = split_labels(LABELS, "random", 0.5, 0)
    plan = classification_plan(split, LABELS, per_class=10, val_fraction=0.2, seed=0)
    assert len(plan) == 400 and [s.index for s in plan] == list(range(400))
    by = {(s.label, s.split) for s in plan}
    for label in split["id"]:
        assert sum(1 for s in plan if s.label == label and s.split == "train") == 8
        assert sum(1 for s in plan if s.label == label and s.split == "val_on_train") == 2
        assert (label, "val") not in by
    assert all(s.split == "val" for s in plan if s.label in split["ood"])
    smaller = classification_plan(split, LABELS, per_class=5, val_fraction=0.2, seed=0)
    assert {(s.label, s.rank): s.seed for s in smaller}.items() <= {(s.label, s.rank): s.seed for s in plan}.items()


def test_clutter_plan_respects_split_rules():
    split = split_labels(LABELS, "random", 0.5, 0)
    plan = clutter_plan(split, 200, 3, 8, 0.3, 0.2, seed=1)
    assert {e.split for e in plan} == {"train", "val_on_train", "val"}
    for episode in plan:
        assert 3 <= len(episode.objects) <= 8 and len(set(episode.objects)) == len(episode.objects)
        has_ood = any(o in split["ood"] for o in episode.objects)
        assert has_ood == (episode.split == "val")
    assert clutter_plan(split, 20, 3, 8, 0.3, 0.2, seed=1) == plan[:20]
    with pytest.raises(ValueError, match="min_objects"):
        clutter_plan({"id": LABELS[:2], "ood": []}, 5, 3, 8, 0.3, 0.2, seed=1)


def test_sample_seed_depends_on_all_parts():
    seeds = {sample_seed(0, "a", 0), sample_seed(1, "a", 0), sample_seed(0, "b", 0), sample_seed(0, "a", 1)}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)
