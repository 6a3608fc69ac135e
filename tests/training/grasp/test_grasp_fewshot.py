"""Per-object thresholds after a few-shot finetune: the score an added object exceeds on a set share of held-out
training-scene observations, which never hold it."""
import pytest
import torch

from training.grasp.fewshot import GraspFewShotConfig, added_object_thresholds, object_thresholds
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
