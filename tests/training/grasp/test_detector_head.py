"""The detector head: the student's dense output and the serving arithmetic the trainer shares."""
import numpy as np
import pytest
import torch

from training.grasp.model import DetectorScorer as TorchDetectorScorer
from training.students import Student, StudentConfig, StudentError
from vlkd_runtime.scoring import FIELDS, DetectorScorer


def test_detector_student_gives_one_row_per_stride8_cell():
    model = Student(StudentConfig(arch="resnet18", head="detector", fpn_dim=16), embed_dim=12, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 8 * 8, FIELDS + 12)
    assert torch.allclose(out[..., FIELDS:].norm(dim=-1), torch.ones(2, 64), atol=1e-4)
    assert (out[..., 6:10] >= 0).all() and (out[..., 4:6].abs() <= 0.5).all()


def test_detector_head_refuses_a_vit_backbone():
    with pytest.raises(StudentError, match="detector"):
        StudentConfig(arch="vit_b_32", head="detector").validate()


def _random_features(rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    feats = rng.normal(size=(3, 16, FIELDS + dim)).astype(np.float32)
    feats[..., 4:6] = 0.4 * np.tanh(feats[..., 4:6])
    feats[..., 6:10] = 0.1 * np.abs(feats[..., 6:10])
    return feats


@pytest.mark.parametrize("with_vocabulary", [False, True])
def test_numpy_and_torch_detector_scorers_agree(with_vocabulary: bool):
    rng = np.random.default_rng(0)
    feats = _random_features(rng)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    vocabulary = (rng.normal(size=(7, 8)).astype(np.float32), None) if with_vocabulary else None
    torch_scorer = TorchDetectorScorer(match_scale=20.0, bias=-2.0,
                                       vocabulary=None if vocabulary is None else (torch.from_numpy(vocabulary[0]),
                                                                                  None))
    logits, boxes = torch_scorer.score_and_locate(torch.from_numpy(feats), torch.from_numpy(queries), None)
    served = DetectorScorer(torch_scorer.scale, float(torch_scorer.bias.detach()), vocabulary)
    np_logits, np_boxes = served.score_and_locate(feats, queries, None)
    np.testing.assert_allclose(np_logits, logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(np_boxes, boxes.numpy(), atol=1e-4)
    # the answer falls with the objectness of the chosen cell: a cell that is surely no object cannot answer "yes"
    feats[..., 0] = -30.0
    assert (served.logits(feats, queries, None) < -25).all()


def test_a_vocabulary_match_is_the_softmax_against_the_other_known_names():
    rng = np.random.default_rng(1)
    feats = _random_features(rng)
    feats[..., FIELDS:] /= np.linalg.norm(feats[..., FIELDS:], axis=-1, keepdims=True)
    vocab = rng.normal(size=(6, 8)).astype(np.float32)
    vocab /= np.linalg.norm(vocab, axis=-1, keepdims=True)
    scorer = DetectorScorer(10.0, -3.0, (vocab, None))
    # a name outside the vocabulary: its softmax against the vocabulary and itself, times objectness and free
    outside = rng.normal(size=(1, 8)).astype(np.float32)
    z = 10.0 * feats[..., FIELDS:] @ np.concatenate([vocab, outside]).T  # (B, L, 7)
    softmax = np.exp(z[..., -1]) / np.exp(z).sum(-1)
    prior = 1 / (1 + np.exp(-feats[..., 0])) / (1 + np.exp(-feats[..., 1]))
    np.testing.assert_allclose(np.exp(scorer.log_scores(feats, outside, None)[..., 0]), prior * softmax, rtol=1e-4)
    # a name of the vocabulary counts twice: its match p / (1 + p) of its own softmax p keeps every answer's order
    zv = 10.0 * feats[..., FIELDS:] @ vocab.T
    own = np.exp(zv) / np.exp(zv).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(scorer.log_scores(feats, vocab, None)), prior[..., None] * own / (1 + own),
                               rtol=1e-4)
    # the trained bias b of the sigmoid match plays no part in it
    assert np.array_equal(DetectorScorer(10.0, 5.0, (vocab, None)).log_scores(feats, outside, None),
                          scorer.log_scores(feats, outside, None))


def test_a_distilled_embedding_follows_the_text_trained_one():
    config = StudentConfig(arch="resnet18", head="detector", fpn_dim=16, image_embedding=True)
    model = Student(config, embed_dim=12, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 64, FIELDS + 24)
    for part in (out[..., FIELDS:FIELDS + 12], out[..., FIELDS + 12:]):
        assert torch.allclose(part.norm(dim=-1), torch.ones(2, 64), atol=1e-4)
    assert not torch.allclose(out[..., FIELDS:FIELDS + 12], out[..., FIELDS + 12:], atol=1e-2)
    with pytest.raises(StudentError, match="image_embedding"):
        StudentConfig(arch="resnet18", image_embedding=True).validate()


@pytest.mark.parametrize("with_vocabulary", [False, True])
def test_the_ensemble_weighs_the_two_matches_geometrically(with_vocabulary: bool):
    rng = np.random.default_rng(2)
    text_part = _random_features(rng)
    image_part = rng.normal(size=(3, 16, 8)).astype(np.float32)
    feats = np.concatenate([text_part, image_part], -1)
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    vocabulary = (rng.normal(size=(5, 8)).astype(np.float32), None) if with_vocabulary else None
    only_image = np.concatenate([text_part[..., :FIELDS], image_part], -1)
    for w in (0.0, 0.3, 1.0):
        scorer = DetectorScorer(12.0, -2.0, vocabulary, image_weight=w)
        expected = (1 - w) * scorer.log_scores(text_part, queries, None) + w * scorer.log_scores(only_image, queries,
                                                                                                    None)
        np.testing.assert_allclose(scorer.log_scores(feats, queries, None), expected, atol=1e-5)
        torch_scorer = TorchDetectorScorer(12.0, -2.0, None if vocabulary is None else
                                           (torch.from_numpy(vocabulary[0]), None), image_weight=w)
        logits, boxes = torch_scorer.score_and_locate(torch.from_numpy(feats), torch.from_numpy(queries), None)
        np_logits, np_boxes = scorer.score_and_locate(feats, queries, None)
        np.testing.assert_allclose(np_logits, logits.numpy(), atol=1e-3)
        np.testing.assert_allclose(np_boxes, boxes.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="2 x 8"):
        DetectorScorer(12.0, -2.0).log_scores(feats[..., :-1], queries, None)
