"""End-to-end distillation with a small open_clip teacher loaded from a local file (the `pretrained=` path)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shapes_data import make_dataset, tiny_overrides
from training.checkpoint import CheckpointError, latest_checkpoint
from vlkd_formats.config import load_config
from training.distill import DistillConfig, distill
from training.feature_cache import CorruptImagesError, teacher_image_features
from training.model_dir import load_model_dir
from vlkd_formats.model_dir import DISTILL_ENTRIES, read_card
from training.teacher import Teacher, TeacherConfig, TeacherLoadError
from vlkd_ros.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


def _config(tiny_dataset, tiny_teacher_file, tmp_path, *extra):
    return load_config(DistillConfig, None, tiny_overrides(tiny_dataset, tiny_teacher_file, tmp_path / "run",
                                                           tmp_path / "cache") + list(extra))


def test_distill_then_eval_and_export_from_the_cli(tiny_dataset, tiny_teacher_file, tmp_path, capsys):
    args = tiny_overrides(tiny_dataset, tiny_teacher_file, tmp_path / "run", tmp_path / "cache")
    assert cli(["distill", *args, "losses=[{type: cls}, {type: mse}, {type: im_cst}, {type: vlprox}]"]) == 0
    run = tmp_path / "run"  # the run dir; the model dir is run/model, and commands take either
    assert f"model dir: {run / 'model'}" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "model").iterdir()) == sorted(DISTILL_ENTRIES)
    assert {"config.yaml", "metrics.jsonl", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert read_card(run, expect_kind="distill").training["data"]["root"] == str(tiny_dataset)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(r["loss/total"] > 0 for r in records)
    student, card, text = load_model_dir(run)
    assert card.labels["id"] == ["red_bar", "red_circle", "red_square", "red_triangle"]
    assert card.labels["ood"] == ["blue_bar", "blue_circle", "blue_square", "blue_triangle"]
    assert text["ood"].shape == (4, 64)

    assert cli(["eval", "--model", str(run), "eval.fewshot.steps=3", "eval.fewshot.batch_size=8"]) == 0
    shown = capsys.readouterr().out
    assert "| student |" in shown and "M_rel" in shown
    result = json.loads((run / "eval" / "eval.json").read_text())
    for key in ("id", "ood_0shot", "ood_kshot", "ood_kshot_retrieval"):
        assert 0.0 <= result["student"][key] <= 1.0
    assert result["counts"]["x_ood_query"] == 4 * (8 - 5)
    assert (run / "eval" / "text_singular_values.png").stat().st_size > 1000
    assert (run / "eval" / "embedding_x_ood.png").stat().st_size > 1000

    assert cli(["export", "--model", str(run)]) == 0
    report = json.loads((run / "export" / "export.json").read_text())
    assert report["max_abs_diff"]["onnx"] < 1e-4 and report["files"] == {"onnx": "student.onnx"}

    assert cli(["add-object", "--model", str(run), "--name", "cup", "--images", "a.png"]) == 2  # not a grasp model
    err = capsys.readouterr().err
    assert f"{run / 'model'} is a distill model dir (kind 'distill'); use it with `vlkd eval`" in err


def test_teacher_cache_is_reused_and_keyed_by_teacher(tiny_dataset, tiny_teacher_file, tmp_path):
    from training.data import DataConfig, load_distill_data

    images = load_distill_data(DataConfig(root=str(tiny_dataset))).train
    teacher = Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(tiny_teacher_file), device="cpu"))
    first = teacher_image_features(teacher, images, tmp_path)
    files = list(tmp_path.glob("image-*.safetensors"))
    mtime = files[0].stat().st_mtime_ns
    again = teacher_image_features(teacher, images, tmp_path)
    assert torch.equal(first.features, again.features) and files[0].stat().st_mtime_ns == mtime

    other_weights = {k: v + 0.01 for k, v in load_file(str(tiny_teacher_file)).items()}
    other_file = tmp_path / "other.safetensors"
    from safetensors.torch import save_file
    save_file(other_weights, str(other_file))
    other = Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(other_file), device="cpu"))
    changed = teacher_image_features(other, images, tmp_path)
    assert changed.key != first.key and len(list(tmp_path.glob("image-*.safetensors"))) == 2
    assert not torch.allclose(changed.features, first.features)


def test_corrupt_images_skipped_or_refused(tmp_path, tiny_teacher_file):
    from training.data import DataConfig, load_distill_data

    data = make_dataset(tmp_path / "d", n_train=5, n_id=1, n_ood=6)
    (data / "train" / "red_bar" / "000.png").write_bytes(b"not a png")
    images = load_distill_data(DataConfig(root=str(data))).train
    teacher = Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(tiny_teacher_file), device="cpu"))
    feats = teacher_image_features(teacher, images, tmp_path / "c", max_corrupt_fraction=0.1)
    assert int((~feats.valid).sum()) == 1
    with pytest.raises(CorruptImagesError, match="1 of 20 images"):
        teacher_image_features(teacher, images, tmp_path / "c", max_corrupt_fraction=0.01)


def test_untrusted_pickle_and_missing_weights_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(TeacherLoadError, match="refusing to load"):
        Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(evil), device="cpu"))
    with pytest.raises(TeacherLoadError, match="does not exist"):
        Teacher(TeacherConfig(model="VLKD-Tiny", pretrained=str(tmp_path / "none.safetensors")))
    with pytest.raises(TeacherLoadError, match="unknown open_clip model"):
        Teacher(TeacherConfig(model="ViT-Huge-99", pretrained=None))


def test_bad_dataset_dirs_exit_with_a_message(tmp_path, tiny_teacher_file, capsys):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    for root, message in ((tmp_path / "missing", "does not exist"), (tmp_path / "empty", "holds no images")):
        code = cli(["distill", *tiny_overrides(root, tiny_teacher_file, tmp_path / "run", tmp_path / "c")])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()


def test_resume_refuses_a_checkpoint_of_another_run(tiny_dataset, tiny_teacher_file, tmp_path):
    distill(_config(tiny_dataset, tiny_teacher_file, tmp_path, "optim.epochs=1"))
    with pytest.raises(ValueError, match="other settings.*optim"):
        distill(_config(tiny_dataset, tiny_teacher_file, tmp_path, "optim.epochs=3"), resume=True)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        distill(_config(tiny_dataset, tiny_teacher_file, tmp_path, "optim.epochs=1", "student.arch=mobilenet_v3_small"),
                resume=True)


def test_kill_mid_run_then_resume_matches_an_uninterrupted_run(tiny_dataset, tiny_teacher_file, tmp_path):
    common = ["optim.epochs=5", "optim.schedule=onecycle"]
    reference = distill(_config(tiny_dataset, tiny_teacher_file, tmp_path / "ref", *common))

    killed = tmp_path / "killed"
    args = tiny_overrides(tiny_dataset, tiny_teacher_file, killed / "run", tmp_path / "ref" / "cache") + common
    proc = subprocess.Popen([sys.executable, "-m", "vlkd_ros.cli", "distill", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed / "run" / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not pointer.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    ckpt = latest_checkpoint(killed / "run")
    assert ckpt is not None and json.loads((ckpt / "state.json").read_text())["epoch"] < 5

    resumed = distill(_config(tiny_dataset, tiny_teacher_file, killed, *common,
                              f"teacher.cache_dir={tmp_path / 'ref' / 'cache'}"), resume=True)
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
