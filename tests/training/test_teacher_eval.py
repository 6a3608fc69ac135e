"""`vlkd eval-teacher`: crop top-1 and presence ROC AUC on clutter, zero-shot accuracy on classification, beside
chance, for a teacher trained on single-object renders of the fixture objects and for an untrained one."""
import json
import random

import pytest
from PIL import Image

from grasp_fixtures import ID_OBJECTS, OBJECTS, OOD_OBJECTS, render_scene
from test_pretrain_teacher import object_renders
from training.data import DatasetError
from training.pretrain_teacher import PretrainConfig, pretrain_teacher
from training.teacher import SHIPPED_TEACHERS, Teacher, TeacherConfig, TeacherLoadError
from training.teacher_eval import evaluate_teacher, teacher_model_name, teacher_table
from vlkd_formats.dataset_dir import read_manifest
from vlkd_ros.cli import main as cli


@pytest.fixture(scope="module")
def render_teacher(tmp_path_factory):
    """A VLKD-Tiny teacher pretrained on single-object renders of the 8 fixture objects (never on a scene)."""
    import torch

    tmp = tmp_path_factory.mktemp("render_teacher")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = PretrainConfig(data_root=str(object_renders(tmp / "renders")), output_dir=str(tmp / "teacher"),
                            model="VLKD-Tiny", epochs=12, batch_size=16, warmup_steps=5, device="cpu")
    try:
        return pretrain_teacher(config)
    finally:
        torch.set_num_threads(threads)


def _classification(root, per_object: int = 4):
    """An ImageFolder dataset of single-object renders: Y_id in train/ and val_on_train/, Y_ood in val/."""
    rng = random.Random(7)
    for split, names in (("train", ID_OBJECTS), ("val_on_train", ID_OBJECTS), ("val", OOD_OBJECTS)):
        for name in names:
            folder = root / split / name.replace(" ", "_")
            folder.mkdir(parents=True)
            for i in range(per_object):
                Image.fromarray(render_scene([name], rng)[0]["base_rgb"]).save(folder / f"{i}.png")
    return root


def test_a_render_teacher_names_crops_and_images_far_above_chance(render_teacher, tiny_clutter, tmp_path):
    classification = _classification(tmp_path / "classification")
    result = evaluate_teacher(str(render_teacher), [str(tiny_clutter), str(classification)], str(tmp_path / "cache"))
    clutter, cls = result["datasets"]
    rows = list(read_manifest(tiny_clutter))
    visible = [(o["name"] in ID_OBJECTS) for r in rows for o in r["objects"] if o["bbox"] is not None]
    assert clutter["frames"] == len(rows) and clutter["crops"] == {"id": sum(visible),
                                                                  "ood": len(visible) - sum(visible)}
    assert clutter["chance"]["crop_top1_part"] == {"id": 0.25, "ood": 0.25}
    assert clutter["chance"]["crop_top1_all"] == {"id": 1 / len(OBJECTS), "ood": 1 / len(OBJECTS)}
    for part in ("id", "ood"):  # unique colours: a teacher that has seen the objects names their crops
        assert clutter["crop_top1_part"][part] > 0.55, clutter  # measured 0.73 / 0.88, chance 0.25
        assert clutter["crop_top1_all"][part] > 0.4, clutter  # measured 0.56 / 0.75, chance 0.125
        assert clutter["presence_auc"][part] > 0.7, clutter  # measured 0.85 / 0.90, never trained on a scene
        assert clutter["crop_top1_all"][part] <= clutter["crop_top1_part"][part]  # more names, never more right
        assert cls["zero_shot"][part] > 0.6, cls
    assert cls["images"] == {"id": 16, "ood": 16} and cls["chance"]["zero_shot"] == {"id": 0.25, "ood": 0.25}
    assert result["weights"].startswith("dir:")


def test_the_cli_prints_every_figure_beside_chance_and_writes_json(tiny_teacher_dir, tiny_clutter, tmp_path, capsys):
    out = tmp_path / "figures" / "teacher.json"
    assert cli(["eval-teacher", str(tiny_clutter), "--teacher", str(tiny_teacher_dir),
                "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("crop top-1 among its part's names", "crop top-1 among all names", "whole-frame presence ROC AUC"):
        assert title in printed
    assert "| 25.0% / 25.0% |" in printed and "| 12.5% / 12.5% |" in printed and "| 0.500 / 0.500 |" in printed
    result = json.loads(out.read_text())
    assert all(0.0 <= result["datasets"][0]["presence_auc"][p] <= 1.0 for p in ("id", "ood"))
    assert out.with_suffix(".md").read_text() == teacher_table(result)


@pytest.fixture
def tiny_teacher_dir(tiny_teacher_file, tmp_path):
    """The randomly initialised VLKD-Tiny as an open_clip local-dir folder (config + weights)."""
    import open_clip
    import shutil

    from training.teacher import PACKAGED_MODEL_CONFIGS

    open_clip.add_model_config(PACKAGED_MODEL_CONFIGS)
    folder = tmp_path / "tiny_teacher"
    folder.mkdir()
    shutil.copy(tiny_teacher_file, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("VLKD-Tiny")}))
    return folder


def test_teachers_and_datasets_that_are_not_are_named_before_any_work(tmp_path, tiny_clutter):
    assert teacher_model_name("vlkd-offline") == "vlkd-offline"
    assert teacher_model_name("local-dir:/x") == "local-dir:/x"
    with pytest.raises(TeacherLoadError, match="neither a shipped teacher"):
        teacher_model_name(str(tmp_path / "missing"))
    with pytest.raises(TeacherLoadError, match="no open_clip_config.json"):
        teacher_model_name(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a clutter dataset"):
        evaluate_teacher("vlkd-offline", [str(tiny_clutter), str(tmp_path / "empty")], str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate_teacher("vlkd-offline", [str(tmp_path / "nowhere")], str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(SHIPPED_TEACHERS))
def test_every_shipped_teacher_loads_and_tells_the_object_names_apart(name):
    """A shipped teacher loads by its name (safetensors, no download), encodes images at its input size, and gives
    the 40 offline object names 40 distinct unit text directions."""
    import torch

    from sim.catalog import load_object_set

    teacher = Teacher(TeacherConfig(model=name, pretrained=None))
    names = [obj.name for obj in load_object_set("offline").objects]
    text = teacher.encode_texts([[f"a photo of a {n}."] for n in names])
    images = teacher.encode_images(torch.rand(2, 3, teacher.image_size, teacher.image_size))
    assert len(names) == 40 and text.shape[0] == 40 and images.shape == (2, text.shape[1])
    assert torch.allclose(text.norm(dim=1), torch.ones(40), atol=1e-3)
    cos = text @ text.T - 2 * torch.eye(40)
    assert float(cos.max()) < 0.99
