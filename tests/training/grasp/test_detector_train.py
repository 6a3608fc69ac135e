"""The detector's training targets follow the object masks, and `vlkd train-grasp` with student.head=detector
trains a detector that finds the objects it was shown and writes a model dir whose answers carry boxes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.grasp.data import ObservationTransform, jitter_brightness, recolor_observations
from training.grasp.detector import DetectorLossConfig, SlotLabels, detector_loss, detector_targets, focal_heatmap_loss
from vlkd_runtime.scoring import FIELDS


def _mask(boxes: list[tuple[int, int, int, int]], size: int = 32) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        mask[0, y0:y1 + 1, x0:x1 + 1] = k + 1
    return mask


def test_targets_follow_the_mask_and_its_flip():
    mask = _mask([(8, 4, 15, 11), (30, 30, 30, 31), (0, 0, -1, -1)])  # slot 1: 2 pixels, slot 2: none
    t = detector_targets(mask, 3, 4, DetectorLossConfig())
    assert t.valid.tolist() == [[True, False, False]]
    assert t.cell[0, 0] == 1 * 4 + 1  # centre (12, 8) px of 32 -> cell (row 1, column 1) of 4x4
    assert t.offset[0, 0].tolist() == pytest.approx([0.0, -0.5])
    assert t.sides[0, 0].tolist() == pytest.approx([4 / 32, 4 / 32, 4 / 32, 4 / 32])
    assert t.heatmap[0].argmax() == 5 and float(t.heatmap[0].max()) == pytest.approx(1.0)
    flipped = detector_targets(mask.flip(-1), 3, 4, DetectorLossConfig())
    assert flipped.cell[0, 0] == 1 * 4 + 2  # the flip moves the object to column 2


def test_focal_loss_is_lowest_at_the_target():
    target = detector_targets(_mask([(8, 4, 15, 11)]), 1, 4, DetectorLossConfig()).heatmap
    right = torch.where(target >= 1, 6.0, -6.0)
    wrong = torch.where(target >= 1, -6.0, 6.0)
    assert focal_heatmap_loss(right, target) < 0.01 < 1.0 < focal_heatmap_loss(wrong, target)


def test_crop_term_reads_the_embedding_at_the_object_centre():
    targets = detector_targets(_mask([(8, 4, 15, 11)]), 1, 4, DetectorLossConfig())
    labels = SlotLabels(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1))
    crop = torch.nn.functional.normalize(torch.randn(1, 1, 8), dim=-1)
    feats = torch.zeros(1, 16, FIELDS + 8)
    feats[0, :, FIELDS:] = -crop[0, 0]  # every location points away from the crop ...
    text, match = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1), lambda e, t: e @ t.T
    far = detector_loss(feats, targets, labels, text, match, DetectorLossConfig(), (crop, torch.ones(1, 1).bool()))
    feats[0, int(targets.cell[0, 0]), FIELDS:] = crop[0, 0]  # ... but the object's centre location
    near = detector_loss(feats, targets, labels, text, match, DetectorLossConfig(), (crop, torch.ones(1, 1).bool()))
    assert far[1]["crop"] == pytest.approx(2.0) and near[1]["crop"] == pytest.approx(0.0, abs=1e-6)
    unused = detector_loss(feats, targets, labels, text, match, DetectorLossConfig())
    assert "crop" not in unused[1]
    # with a distilled embedding after the text-trained one, the crop term reads that one and the text terms do not
    both = torch.cat([torch.zeros(1, 16, FIELDS + 8), feats[..., FIELDS:]], -1)
    both[..., FIELDS:FIELDS + 8] = feats[..., FIELDS:].roll(1, 1)
    terms = detector_loss(both, targets, labels, text, match, DetectorLossConfig(), (crop, torch.ones(1, 1).bool()))[1]
    assert terms["crop"] == pytest.approx(0.0, abs=1e-6)
    text_only = detector_loss(both[..., :FIELDS + 8], targets, labels, text, match, DetectorLossConfig())[1]
    assert terms["text"] == pytest.approx(float(text_only["text"]))


def test_brightness_jitter_scales_rgb_pixels_within_its_range_and_leaves_depth():
    transform = ObservationTransform(["base_rgb", "base_depth"], 16, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], 2.0)
    pixels = 0.2 + 0.3 * torch.rand(64, 3, 16, 16)  # dim enough that no gain up to 1.5 clips
    x = torch.cat([(pixels - transform.mean) / transform.std, torch.rand(64, 1, 16, 16)], 1)
    y = jitter_brightness(x, torch.Generator().manual_seed(0), (0.25, 1.5), transform)
    gains = (y[:, :3] * transform.std + transform.mean) / pixels
    per_frame = gains.flatten(1)
    assert torch.allclose(per_frame.min(1).values, per_frame.max(1).values, atol=1e-4)  # one gain per frame
    assert 0.25 - 1e-4 <= float(per_frame.min()) and float(per_frame.max()) <= 1.5 + 1e-4
    assert float(per_frame[:, 0].std()) > 0.1 and torch.equal(y[:, 3], x[:, 3])


def test_recolouring_turns_hues_keeps_grey_and_brightness_and_leaves_depth():
    transform = ObservationTransform(["base_rgb", "base_depth"], 16, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], 2.0)
    pixels = 0.3 + 0.4 * torch.rand(64, 3, 16, 16)
    pixels[:, :, 0, 0] = 0.45  # one grey pixel per frame
    x = torch.cat([(pixels - transform.mean) / transform.std, torch.rand(64, 1, 16, 16)], 1)
    generator = torch.Generator().manual_seed(0)
    same, none = recolor_observations(x, generator, 0.0, transform)
    assert same is x and not none.any() and torch.equal(generator.get_state(), torch.Generator().manual_seed(0)
                                                        .get_state())  # share 0 draws nothing
    y, chosen = recolor_observations(x, generator, 0.5, transform)
    assert 16 <= int(chosen.sum()) <= 48 and torch.equal(y[~chosen], x[~chosen]) and torch.equal(y[:, 3], x[:, 3])
    out = y[:, :3] * transform.std + transform.mean
    assert torch.allclose(out[chosen, :, 0, 0], torch.full_like(out[chosen, :, 0, 0], 0.45), atol=1e-5)
    unclipped = ((out > 0) & (out < 1)).all(1)[chosen]  # where nothing clipped, the mean of R, G, B is kept
    assert torch.allclose(out[chosen].mean(1)[unclipped], pixels[chosen].mean(1)[unclipped], atol=1e-5)
    change = (out[chosen] - pixels[chosen]).abs().flatten(1).amax(1)
    assert float(change.min()) > 0.05  # every recoloured frame's colours moved (hue turns of >= 30 degrees)


def test_online_crop_features_match_the_cached_crops_of_the_same_frames(tiny_clutter: Path, tmp_path: Path,
                                                                         torch_single_thread):
    from training.grasp.data import GraspDataConfig, MaskedEpisodeDataset, load_clutter_data
    from training.grasp.regions import online_region_features, teacher_region_features
    from training.teacher import Teacher, TeacherConfig

    teacher = Teacher(TeacherConfig(model="vlkd-table", pretrained=None, device="cpu"))
    episodes = load_clutter_data(GraspDataConfig(root=str(tiny_clutter))).train[:16]
    transform = ObservationTransform(["base_rgb"], 48, teacher.mean, teacher.std, 2.0)
    items = [MaskedEpisodeDataset(episodes, transform)[i] for i in range(len(episodes))]
    x, masks = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
    cached = teacher_region_features(teacher, episodes, tmp_path)
    rows = torch.arange(len(x)) % 2 == 0
    online = online_region_features(teacher, x, masks, cached.features.shape[1], rows)
    assert torch.equal(online.valid, cached.valid & rows[:, None])  # the rows asked for, every visible object
    cos = (online.features * cached.features).sum(-1)[online.valid]
    # the same crops, resampled bilinearly from the normalised frame instead of bicubically from the PNG
    assert float(cos.min()) > 0.9, cos
    flipped = online_region_features(teacher, x.flip(-1), masks.flip(-1), cached.features.shape[1], rows)
    assert float((flipped.features * online.features).sum(-1)[online.valid].min()) > 0.7  # boxes follow the frame (other objects: ~0.36)


@pytest.mark.slow
def test_detector_training_finds_the_objects_it_was_shown(tiny_detector_grasp_model: Path, tiny_clutter: Path,
                                                          torch_single_thread):
    from training.grasp.answer_checks import answer_frames, points_inside
    from training.grasp.data import GraspDataConfig, episode_targets, load_clutter_data
    from training.grasp.model_dir import load_grasp_model_dir
    from vlkd_formats.image_codec import read_rgb

    gm = load_grasp_model_dir(tiny_detector_grasp_model)
    assert gm.grasp.head == "detector"
    data = load_clutter_data(GraspDataConfig(root=str(tiny_clutter)))
    pos = gm.text_features["id"]
    answers = answer_frames(gm.student, gm.scorer(), data.train, gm.transform(), pos, None)
    graspable, _ = episode_targets(data.train, data.id_objects)
    pairs = (graspable > 0.5).nonzero().tolist()
    inside = [points_inside(data.train[i], data.id_objects[j], answers.boxes[i, j, :2],
                            read_rgb(data.train[i].images["base_rgb"]).shape[:2]) for i, j in pairs]
    # each graspable object's answer points at it far more often than at a random spot (its box covers ~15% of
    # the frame)
    print(f"located inside the object: {sum(inside)} of {len(inside)}")
    assert sum(inside) / len(inside) >= 0.6
