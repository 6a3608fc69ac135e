"""The dense grasp student: per-location features, DualCoOp local aggregation, region distillation, locations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.grasp.data import GraspDataConfig, load_clutter_data, read_mask
from training.grasp.model import GraspScorer
from training.grasp.regions import crop_box, region_loss, region_weights
from training.students import Student, StudentConfig, StudentError


def test_dense_student_returns_global_then_one_embedding_per_location():
    student = Student(StudentConfig(arch="efficientnet_b0", dense=True, output_stride=16), 32, 64).eval()
    with torch.no_grad():
        out = student(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1 + 4 * 4, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 17), atol=1e-5)
    with pytest.raises(StudentError, match="convolutional"):
        StudentConfig(arch="vit_b_32", dense=True).validate()
    with pytest.raises(StudentError, match="output_stride"):
        StudentConfig(output_stride=12).validate()


def test_local_aggregation_finds_the_location_that_matches_a_name():
    d, side = 8, 4
    text = F.normalize(torch.eye(d)[:3], dim=-1)
    background = F.normalize(torch.ones(d) - torch.eye(d)[:3].sum(0), dim=0)
    local = background.repeat(1, side * side, 1)
    local[0, 6] = text[1]  # name 1 sits at row 1, column 2
    feats = torch.cat([background[None, None], local], 1)
    scorer = GraspScorer(local_weight=1.0)
    logits = scorer(feats, text, None)
    assert logits[0, 1] > logits[0, 0] and logits[0, 1] > logits[0, 2]
    u, v, x0, y0, x1, y1, conf = scorer.score_and_locate(feats, text, None)[1][0, 1].tolist()
    assert (u, v) == pytest.approx(((2 + 0.5) / side, (1 + 0.5) / side))
    assert x0 <= u <= x1 and y0 <= v <= y1 and conf > 0.9
    with pytest.raises(ValueError, match="local_weight"):
        GraspScorer()(feats, text, None)


def test_score_and_locate_gives_forward_and_the_box_of_the_cells_near_the_peak():
    d, side = 8, 3
    text = F.normalize(torch.eye(d)[:2], dim=-1)
    background = F.normalize(torch.ones(d) - torch.eye(d)[:2].sum(0), dim=0)
    local = background.repeat(2, side * side, 1)
    local[0, [1, 2, 4]] = text[0]  # name 0 over cells (0, 1), (0, 2), (1, 1) of observation 0
    local[1, 8] = text[1]  # name 1 in the bottom-right cell of observation 1
    feats = torch.cat([background.repeat(2, 1, 1), local], 1)
    scorer = GraspScorer(logit_scale=100.0, local_weight=1.0)
    logits, boxes = scorer.score_and_locate(feats, text, None)
    assert torch.allclose(logits, scorer(feats, text, None))
    assert boxes.shape == (2, 2, 7)
    u, v, x0, y0, x1, y1, conf = boxes[0, 0].tolist()
    assert (x0, y0, x1, y1) == pytest.approx((1 / side, 0, 1, 2 / side)) and conf == pytest.approx(1 / 3, abs=1e-3)
    assert (u, v) == pytest.approx((1.5 / side, 0.5 / side)) or (u, v) == pytest.approx((2.5 / side, 0.5 / side)) \
        or (u, v) == pytest.approx((1.5 / side, 1.5 / side))
    assert boxes[1, 1, :6].tolist() == pytest.approx([2.5 / side, 2.5 / side, 2 / side, 2 / side, 1, 1])
    global_logits, no_boxes = scorer.score_and_locate(feats[:, 0], text, None)
    assert no_boxes is None and torch.allclose(global_logits, scorer(feats[:, 0], text, None))


def test_region_weights_and_loss_pool_each_object_over_its_mask():
    masks = torch.zeros(1, 8, 8, dtype=torch.uint8)
    masks[0, :4, :4] = 1  # object 1: the top-left cell of a 2x2 map
    masks[0, 4:, :] = 2   # object 2: the bottom row of cells
    weights, covered = region_weights(masks, slots=3, side=2)
    assert weights[0, 0].tolist() == [1, 0, 0, 0] and weights[0, 1].tolist() == [0, 0, 0.5, 0.5]
    assert covered[0].tolist() == [True, True, False]
    local = F.normalize(torch.randn(1, 4, 16), dim=-1)
    targets = torch.stack([local[0, 0], F.normalize(local[0, 2] + local[0, 3], dim=0), local[0, 1]])[None]
    assert region_loss(local, weights, targets, covered).item() == pytest.approx(0.0, abs=1e-6)
    assert region_loss(local, weights, -targets, covered).item() == pytest.approx(2.0, abs=1e-5)


def test_crop_box_is_square_grown_and_inside_the_image():
    left, top, right, bottom = crop_box((10, 12, 13, 14), 48, 48)
    assert right - left == bottom - top == 8
    assert left <= 10 and right > 13 and top <= 12 and bottom > 14
    assert crop_box((40, 40, 47, 47), 48, 48)[2:] == (48, 48)


def test_masks_follow_the_observation_geometry(tiny_clutter):
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    ep = data.train[0]
    mask = read_mask(ep, 32)
    assert mask.shape == (32, 32) and int(mask.max()) == len(ep.objects)
    for k, obj in enumerate(ep.objects.values()):
        assert (obj.bbox is None) == (not bool((mask == k + 1).any()))


def test_train_grasp_dense_model_answers_with_locations(tiny_dense_grasp_model, tiny_clutter):
    from training.grasp.data import read_view
    from vlkd_ros.inference import GraspFeasibility

    model = GraspFeasibility.from_checkpoint(tiny_dense_grasp_model)
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    ep = data.x_id[0]
    answers = model.query(read_view("base_rgb", ep.images["base_rgb"]), list(ep.objects))[0]
    for name, a in answers.items():
        loc = a["location"]
        assert 0 <= loc["u"] <= 1 and 0 <= loc["v"] <= 1 and 0 <= loc["confidence"] <= 1
        x0, y0, x1, y1 = loc["box"]
        assert 0 <= x0 <= loc["u"] <= x1 <= 1 and 0 <= y0 <= loc["v"] <= y1 <= 1
    metrics = (tiny_dense_grasp_model.parent / "metrics.jsonl").read_text().splitlines()
    assert any("loss/region" in line for line in metrics)
    assert not math.isnan(model.threshold)


def test_augmentation_moves_masks_with_the_views():
    from training.grasp.data import augment_observations

    masks = torch.zeros(6, 16, 16, dtype=torch.uint8)
    masks[:, 2:6, 1:4] = 1
    masks[:, 9:14, 10:15] = 2
    x = masks[:, None].float().repeat(1, 3, 1, 1)
    flipped, moved = augment_observations(x, torch.Generator().manual_seed(0), 1.0, masks)  # flips only
    assert torch.equal(flipped[:, 0].round().to(torch.uint8), moved)
    assert any(not torch.equal(moved[i], masks[i]) for i in range(6))  # some were flipped
    _, cropped = augment_observations(x, torch.Generator().manual_seed(1), 0.5, masks)
    assert set(cropped.unique().tolist()) <= {0, 1, 2}  # nearest: labels stay labels
