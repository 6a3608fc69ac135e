"""GraspFeasibility.embed / answer: the image encoder once per observation, then any number of names answered from
its embedding with exactly query's results, under either backend and thread setting."""
import numpy as np
import pytest

from training.grasp.data import GraspDataConfig, load_clutter_data, read_view
from vlkd_ros.inference import GraspFeasibility
from vlkd_ros.inference.protocol import GraspEmbedding

pytestmark = pytest.mark.usefixtures("torch_single_thread")
NAMES = ["red circle", "green triangle", "Blue_Square", "banana split"]  # trained, OOD, respelled, never seen


@pytest.fixture(scope="module")
def frames(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    return [read_view("base_rgb", e.images["base_rgb"]) for e in data.x_ood[:3]]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_answer_of_embed_is_query(tiny_grasp_model, frames, backend) -> None:
    """One embed of three frames answers every name, one at a time or all at once, as query does."""
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model, backend=backend, threads=1)
    embedding = model.embed(frames)
    assert isinstance(embedding, GraspEmbedding) and len(embedding) == 3
    assert embedding.model_version == model.model_version
    expected = model.query(frames, NAMES)
    assert model.answer(embedding, NAMES) == expected
    for name in NAMES:  # one name at a time: the same up to float32 rounding of a (1, N) product
        for row, want in zip(model.answer(embedding, [name]), expected):
            assert row[name]["score"] == pytest.approx(want[name]["score"], abs=1e-6)
            assert row[name]["graspable"] == want[name]["graspable"]
    one = model.embed(frames[1])  # one array -> one observation
    assert len(one) == 1 and list(model.answer(one, NAMES)[0]) == NAMES
    for name in NAMES:
        assert model.answer(one, NAMES)[0][name]["score"] == pytest.approx(expected[1][name]["score"], abs=1e-6)
    assert np.allclose(one.features, embedding.features[1:2], atol=1e-6)


def test_answer_checks_its_inputs(tiny_grasp_model, frames) -> None:
    """Names are checked as in query; an embedding from elsewhere is refused."""
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model)
    other = GraspFeasibility.from_checkpoint(tiny_grasp_model)
    embedding = model.embed(frames[0])
    with pytest.raises(ValueError, match=r"use \['red circle'\]"):
        model.answer(embedding, "red circle")
    with pytest.raises(ValueError, match="non-empty list"):
        model.answer(embedding, [])
    with pytest.raises(ValueError, match="takes an embedding made by this model's embed"):
        other.answer(embedding, ["red circle"])
    with pytest.raises(ValueError, match="takes an embedding made by this model's embed"):
        model.answer(np.zeros((1, 8), np.float32), ["red circle"])
    with pytest.raises(ValueError, match="image 0: view 'base_rgb' must be an HxWx3 uint8"):
        model.embed(frames[0].astype(np.float32))
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        GraspFeasibility.from_checkpoint(tiny_grasp_model, threads=-1)


def test_onnx_threads_set_the_session(tiny_grasp_model) -> None:
    """threads > 0 sets onnxruntime's intra-op threads (the node's inference_threads)."""
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model, backend="onnx", threads=1)
    options = model.encoder.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_names_answered_before_on_an_embedding_mix_with_new_ones(tiny_grasp_model, frames) -> None:
    """An embedding keeps each name's answer (the node asks the same names about one frame many times): names
    answered before, mixed with new ones, in any order and repeated, answer as one call on a fresh embedding."""
    model = GraspFeasibility.from_checkpoint(tiny_grasp_model, threads=1)
    embedding = model.embed(frames)
    model.answer(embedding, NAMES[:2])
    mixed = [NAMES[3], NAMES[1], NAMES[2], NAMES[1]]
    fresh = model.answer(model.embed(frames), mixed)
    for got, want in zip(model.answer(embedding, mixed), fresh):
        assert list(got) == list(want)
        for name in mixed:
            assert got[name]["score"] == pytest.approx(want[name]["score"], abs=1e-6)
            assert got[name]["graspable"] == want[name]["graspable"]
    assert model.answer(embedding, mixed) == model.answer(embedding, mixed)
