"""`vlkd pretrain-teacher` writes an open_clip local-dir teacher that the distillation teacher path loads; with
scenes it learns which objects a scene holds."""
import json
import random

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from grasp_fixtures import OBJECTS, make_clutter_dataset, render_scene
from shapes_data import COLOURS, SHAPES, draw_sample, make_dataset
from training.data import DatasetError
from training.evaluate import teacher_presence_auc, teacher_zero_shot
from training.pretrain_teacher import (PresenceLoss, PretrainConfig, captions_for, contrastive_loss, pretrain_teacher,
                                       scene_caption, write_teacher_card)
from training.teacher import Teacher, TeacherConfig
from training.teacher_eval import evaluate_teacher
from vlkd_formats.dataset_dir import read_manifest


def test_captions_use_name_and_description():
    caps = captions_for("coffee_mug", "a ceramic cup with a handle", ["a photo of a {name}.", "{name}: {description}"])
    assert caps == ["a photo of a coffee mug.", "coffee mug: a ceramic cup with a handle"]


def test_pretrained_teacher_loads_like_any_open_clip_model(tmp_path):
    rng = random.Random(0)
    for colour in COLOURS:
        for shape in SHAPES:
            folder = tmp_path / "renders" / "train" / f"{colour}_{shape}"
            folder.mkdir(parents=True)
            for i in range(4):
                draw_sample(shape, COLOURS[colour], rng).save(folder / f"{i}.png")
    config = PretrainConfig(data_root=str(tmp_path / "renders"), output_dir=str(tmp_path / "teacher"),
                            model="VLKD-Tiny", epochs=2, batch_size=16, warmup_steps=1, device="cpu")
    out = pretrain_teacher(config)
    assert (out / "open_clip_config.json").is_file() and (out / "open_clip_model.safetensors").is_file()

    teacher = Teacher(TeacherConfig(model=f"local-dir:{out}", pretrained=None, device="cpu"))
    assert teacher.embed_dim == 64 and teacher.image_size == 64
    text = teacher.encode_texts([["a photo of a red circle."], ["a photo of a blue bar."]])
    assert text.shape == (2, 64) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-4)
    assert teacher.fingerprint()["weights"].startswith("dir:")

    data = make_dataset(tmp_path / "eval", n_train=2, n_id=2, n_ood=2)
    zero_shot = teacher_zero_shot(f"local-dir:{out}", str(data), str(tmp_path / "cache"))
    assert set(zero_shot) == {"id", "ood"} and all(0 <= v <= 1 for v in zero_shot.values())
    write_teacher_card(out, evaluate_teacher(str(out), [str(data)], str(tmp_path / "cache")), "vlkd pretrain-teacher",
                       config)
    assert json.loads((out / "card.json").read_text())["figures"][0]["zero_shot"] == zero_shot
    assert "| zero-shot accuracy" in (out / "CARD.md").read_text()


def test_scene_caption_lists_every_object_once():
    caption = scene_caption(["banana", "dice", "hammer"], "a table with {objects}.", random.Random(0))
    assert caption.startswith("a table with a ") and caption.endswith(".") and " and a " in caption
    assert sorted(caption[len("a table with "):-1].replace(" and ", ", ").split(", ")) == [
        "a banana", "a dice", "a hammer"]


def object_renders(root, per_object: int = 8):
    """Single-object renders of the grasp fixtures' objects in a renders dir (train/<label>/)."""
    rng = random.Random(0)
    for name in OBJECTS:
        folder = root / "train" / name.replace(" ", "_")
        folder.mkdir(parents=True)
        for i in range(per_object):
            Image.fromarray(render_scene([name], rng)[0]["base_rgb"]).save(folder / f"{i}.png")
    return root


def test_presence_loss_is_lower_when_the_image_matches_the_present_objects():
    prompts = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    image = torch.nn.functional.normalize(prompts[0] + prompts[1], dim=0)[None]
    head = PresenceLoss()
    right = head(image, prompts, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    wrong = head(image, prompts, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert right < wrong
    right.backward()
    assert head.bias.grad is not None and head.log_scale.grad is not None


def test_scene_pretraining_teaches_the_teacher_which_objects_a_scene_holds(tmp_path, tiny_clutter, torch_single_thread):
    renders = object_renders(tmp_path / "renders")
    scenes = make_clutter_dataset(tmp_path / "scenes", n_train=48, n_id=0, n_ood=48, seed=1)  # not the eval scenes
    config = PretrainConfig(data_root=str(renders), output_dir=str(tmp_path / "teacher"), clutter_root=str(scenes),
                            model="VLKD-Tiny", epochs=12, batch_size=16, warmup_steps=5, presence_weight=1.0,
                            device="cpu")
    out = pretrain_teacher(config)
    assert json.loads((out / "labels.json").read_text())["scenes"] == 96
    auc = teacher_presence_auc(f"local-dir:{out}", str(tiny_clutter), str(tmp_path / "cache"),
                               prompt="there is a {} in this image.")
    assert auc["id"] > 0.85 and auc["ood"] > 0.85, auc
    result = evaluate_teacher(str(out), [str(tiny_clutter)], str(tmp_path / "cache"))
    write_teacher_card(out, result, "vlkd ...", config)
    card = (out / "CARD.md").read_text()
    presence = result["datasets"][0]["presence_auc"]
    assert "96 of its samples come from clutter scenes" in card and f"| {presence['ood']:.3f} |" in card


def test_scenes_may_skip_the_contrastive_loss_even_in_batches_without_a_render(tmp_path, tiny_clutter,
                                                                              torch_single_thread):
    renders = object_renders(tmp_path / "renders", per_object=1)
    config = PretrainConfig(data_root=str(renders), output_dir=str(tmp_path / "teacher"),
                            clutter_root=str(tiny_clutter),
                            model="VLKD-Tiny", epochs=1, batch_size=4, warmup_steps=1, presence_weight=0.3,
                            scene_contrastive=False, device="cpu")
    out = pretrain_teacher(config)  # 8 renders among 116 scenes: most batches hold scenes only
    weights = load_file(out / "open_clip_model.safetensors")
    assert all(torch.isfinite(w.float()).all() for w in weights.values())


def test_scenes_of_objects_without_renders_are_refused(tmp_path, tiny_clutter):
    renders = tmp_path / "renders"
    Image.new("RGB", (8, 8)).save((renders / "train" / "red_circle").mkdir(parents=True) or
                                  renders / "train" / "red_circle" / "0.png")
    config = PretrainConfig(data_root=str(renders), clutter_root=str(tiny_clutter), model="VLKD-Tiny", device="cpu")
    with pytest.raises(DatasetError, match="renders lack"):
        pretrain_teacher(config)


def test_samples_of_one_object_are_each_others_positives_in_the_multi_positive_loss():
    image = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    swapped = image[[1, 0, 2, 3]]  # samples 0 and 1 show one object: each image lies on the other's caption
    scale, groups = torch.tensor(10.0), torch.tensor([0, 0, 1, 2])
    assert contrastive_loss(image, swapped, scale) > contrastive_loss(image, image, scale) + 1.0
    assert torch.isclose(contrastive_loss(image, swapped, scale, groups), contrastive_loss(image, image, scale, groups))
    assert torch.isclose(contrastive_loss(image, image, scale, torch.arange(4)), contrastive_loss(image, image, scale))


def test_crops_and_held_out_selection_with_resume(tmp_path, torch_single_thread):
    renders = object_renders(tmp_path / "renders", per_object=2)
    scenes = make_clutter_dataset(tmp_path / "scenes", n_train=12, n_id=6, n_ood=6, seed=3)
    config = PretrainConfig(data_root=str(renders), output_dir=str(tmp_path / "teacher"), clutter_root=str(scenes),
                            model="VLKD-Tiny", epochs=2, batch_size=8, warmup_steps=2, device="cpu", crops=True,
                            multi_positive=True, name_weight=1.0, presence_weight=0.3, select_split="val_on_train")
    pretrain_teacher(config)
    first = json.loads((tmp_path / "teacher.run" / "history.json").read_text())
    config.epochs = 3
    out = pretrain_teacher(config, resume=True)
    history = json.loads((tmp_path / "teacher.run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[:2] == first  # resumed, not restarted
    made = json.loads((out / "labels.json").read_text())
    assert made["selected"] == max(history, key=lambda h: h["score"])
    rows = [r for r in read_manifest(scenes) if r["split"] != "val_on_train"]
    crops = sum(1 for r in rows for o in r["objects"] if o["bbox"] and
                (o["bbox"][2] - o["bbox"][0] + 1) * (o["bbox"][3] - o["bbox"][1] + 1) >= config.min_crop_pixels)
    assert made["scenes"] == len(rows) + crops  # no held-out scene is trained on
    weights = f"epoch-{made['selected']['epoch']:04d}"
    assert (out / "open_clip_model.safetensors").read_bytes() == (
        tmp_path / "teacher.run" / "selection" / weights / "open_clip_model.safetensors").read_bytes()


def test_crops_need_scenes_and_selection_needs_its_split(tmp_path, tiny_clutter):
    with pytest.raises(ValueError, match="need clutter_root"):
        PretrainConfig(crops=True).validate()
    renders = object_renders(tmp_path / "renders", per_object=1)
    config = PretrainConfig(data_root=str(renders), clutter_root=str(tiny_clutter), select_split="test",
                            model="VLKD-Tiny", device="cpu")
    with pytest.raises(DatasetError, match="no 'test' scenes to select on"):
        pretrain_teacher(config)


def test_the_cli_trains_then_writes_a_card_with_every_figure_beside_chance(tmp_path, tiny_clutter, capsys,
                                                                           torch_single_thread):
    from vlkd_ros.cli import main as cli

    renders = object_renders(tmp_path / "renders", per_object=2)
    data = make_dataset(tmp_path / "eval", n_train=2, n_id=2, n_ood=2)
    out = tmp_path / "teacher"
    args = ["pretrain-teacher", f"data_root={renders}", f"output_dir={out}", "model=VLKD-Tiny", "epochs=1",
            "batch_size=8", "warmup_steps=1", "device=cpu", "--eval-data", str(data), "--eval-clutter", str(tiny_clutter)]
    assert cli(args) == 0
    weights = (out / "open_clip_model.safetensors").read_bytes()
    assert cli(args + ["--resume"]) == 0  # the run is complete: nothing retrained, the card rewritten
    assert (out / "open_clip_model.safetensors").read_bytes() == weights
    assert [h["epoch"] for h in json.loads((tmp_path / "teacher.run" / "history.json").read_text())] == [1]
    assert "| whole-frame presence ROC AUC |" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert [d["kind"] for d in card["figures"]] == ["classification", "clutter"]
    assert card["data"] == {str(renders): {}} and card["reproduce"].startswith("vlkd ")
    text = (out / "CARD.md").read_text()
    assert "| crop top-1 among all names |" in text and "| 12.5% / 12.5% |" in text and "Reproduce: `vlkd" in text
