"""Per-object thresholds after a few-shot finetune: the score an added object exceeds on a set share of held-out
training-scene observations, which never hold it; the held-out split of the shots, the known-objects guard's
resolution, and the held-out judgement that junk shots fail."""
import numpy as np
import pytest
import torch

from training.grasp.fewshot import (GraspFewShotConfig, added_object_thresholds, check_finetune, finetune_grasp,
                                    guard_problem, guard_resolution, object_thresholds, split_holdout)
from training.grasp.model import score_inputs
from training.grasp.model_dir import load_grasp_model_dir

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_object_thresholds_keep_the_false_positive_rate_on_frames_without_the_object(tiny_grasp_model):
    gm = load_grasp_model_dir(tiny_grasp_model, torch.device("cpu"))
    absent = gm.replay().val_inputs
    pos = gm.text_features["ood"]  # several objects at once, one column each
    neg = gm.text_features.get("ood_neg")
    scores = score_inputs(gm.student, gm.scorer(), absent, pos, neg)
    for fpr in (0.1, 0.25, 0.5):
        thresholds = object_thresholds(gm.student, gm.scorer(), absent, pos, neg, fpr)
        assert thresholds.shape == (len(pos),)
        for column, t in zip(scores.T, thresholds):
            said_yes = float((column >= t).float().mean())  # what `query` answers "graspable" on
            assert fpr - 1 / len(absent) < said_yes <= fpr
    assert object_thresholds(gm.student, gm.scorer(), absent[:0], pos, neg, 0.2) is None
    # What add_object and Table 11's k-shot columns use: one value per object, None for "the model's threshold".
    same = added_object_thresholds(gm.student, gm.scorer(), absent, pos, neg, 0.25)
    assert same == pytest.approx(object_thresholds(gm.student, gm.scorer(), absent, pos, neg, 0.25).tolist())
    assert added_object_thresholds(gm.student, gm.scorer(), absent, pos, neg, 1.0) == [None] * len(pos)
    assert added_object_thresholds(gm.student, gm.scorer(), absent[:0], pos, neg, 0.2) == [None] * len(pos)


@pytest.mark.parametrize("fpr", [0.0, 1.5, -0.1])
def test_object_fpr_outside_0_1_is_refused(fpr):
    with pytest.raises(ValueError, match="object_fpr"):
        GraspFewShotConfig(object_fpr=fpr).validate()


def test_split_holdout_keeps_the_last_shots_out():
    assert split_holdout(2, 0.2) == ([0], [1]) and split_holdout(5, 0.2) == ([0, 1, 2, 3], [4])
    assert split_holdout(10, 0.2) == (list(range(8)), [8, 9]) and split_holdout(3, 0.9) == ([0], [1, 2])
    with pytest.raises(ValueError, match="at least 2 distinct shots"):
        split_holdout(1, 0.2)


def test_the_guard_says_how_many_held_out_observations_resolve_its_margin():
    """Twice AUC's worst-case standard error; a buffer too small for max_drop is named with what it would need."""
    balanced = torch.tensor([[1.0], [0.0]]).repeat(268, 1)  # 268 positive, 268 negative pairs
    assert guard_resolution(balanced) == pytest.approx(0.05, abs=2e-4)
    assert guard_problem(balanced, 0.05) is None
    tiny = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]).repeat(4, 1)  # 12 obs x 4 objects, p = 1/4
    problem = guard_problem(tiny, 0.05)
    assert "holds 12 held-out observations (12 graspable of 48 object pairs)" in problem
    assert "resolves ROC AUC drops of 0.19" in problem and "needs about 178 such observations" in problem
    assert "val_size >= 178" in problem and "fewshot.max_drop >= 0.20" in problem
    assert guard_problem(tiny, 0.2) is None and guard_problem(tiny, 1.0) is None  # 1: no guard
    assert "no graspable known objects" in guard_problem(torch.zeros(12, 4), 0.05)
    assert guard_resolution(torch.zeros(0, 4)) == float("inf")


JUNK = {"grey": lambda rng, i: np.full((48, 48, 3), 100 + 3 * i, np.uint8),
        "noise": lambda rng, i: rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)}


@pytest.mark.parametrize("junk", sorted(JUNK))
def test_junk_shots_fail_the_held_out_judgement(tiny_grasp_model, tiny_clutter, junk):
    """Past the shot checks (called around here), a finetune on grey or noise frames learns them so well that a
    held-out one scores ~1; what gives it away is that structureless copies of it (a flat frame of its mean
    colour, noise of its colours) score as high. Real shots of an object pass the same checks."""
    from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
    from vlkd_ros.inference import GraspFeasibility

    model = GraspFeasibility.from_checkpoint(tiny_grasp_model)
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    rng = np.random.default_rng(0)
    real = [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood
            if "orange square" in e.objects and e.objects["orange square"].graspable][:5]
    outcomes = {}
    for label, frames in (("real", real), (junk, [JUNK[junk](rng, i) for i in range(5)])):
        outcomes[label] = _finetune_and_check(model, "orange square", model._prepare(frames))
    real_check, junk_check = outcomes["real"], outcomes[junk]
    assert real_check.ok, real_check.reason
    assert junk_check.report["new_heldout_score"] > 0.9  # learnt: the held-out junk frame scores high ...
    assert not junk_check.ok, junk_check.report
    assert "structureless copies of the held-out shots" in junk_check.reason
    assert junk_check.report["control_gap"] < model.fewshot.min_control_gap < real_check.report["control_gap"]


def _finetune_and_check(model, name, inputs):
    """What GraspFeasibility's job does between its shots and its commit, on one new object's shots."""
    from vlkd_formats.object_registry import ObjectEntry
    from vlkd_ros.inference.grasp import _one_column

    registry = model._serving.registry.with_object(ObjectEntry(name, source="added"))
    names = registry.names()
    col = names.index(name)
    train, held = split_holdout(len(inputs), model.fewshot.holdout)
    pos, neg = model._features(names, registry)
    tuned = finetune_grasp(model._serving.student, model._scorer, _one_column(inputs[train], len(names), col),
                           model._replay_sets(registry, names, skip=name), pos, neg, model.fewshot, seed=0)
    buffer, known = model._replay_buffer(), model._replay_columns()
    cols = [c for c, n in enumerate(names) if n in known]
    return check_finetune(model._serving.student, tuned, model._scorer, model.threshold, buffer.val_inputs,
                          buffer.val_targets[:, [known[names[c]] for c in cols]], pos[cols],
                          None if neg is None else neg[cols], inputs[held], pos[col:col + 1],
                          None if neg is None else neg[col:col + 1], model.fewshot)
