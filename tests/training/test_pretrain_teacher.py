"""`vlkd pretrain-teacher` writes an open_clip local-dir teacher that the distillation teacher path loads."""
import json
import random

import torch

from shapes_data import COLOURS, SHAPES, draw_sample, make_dataset
from training.evaluate import teacher_zero_shot
from training.pretrain_teacher import PretrainConfig, captions_for, pretrain_teacher, write_teacher_card
from training.teacher import Teacher, TeacherConfig


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
    write_teacher_card(out, zero_shot, str(data), "vlkd pretrain-teacher ...")
    assert json.loads((out / "card.json").read_text())["zero_shot"] == zero_shot
    assert "Zero-shot accuracy" in (out / "CARD.md").read_text()
