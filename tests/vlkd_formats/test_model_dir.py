"""The model-dir format's one card loader: kinds, run dirs holding `model/`, other versions, and the layout's names.

These cards are written by hand (the format is plain JSON); the tests of training/ and inference/ read the cards
that real training runs wrote."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import (CARD_FILE, RUN_MODEL_DIR, VERSION, ModelCard, ModelDirError, WrongKindError,
                                    file_slug, onnx_file, read_card, resolve_model_dir, shots_file, write_card)


def _card(kind: str = "distill", **extra) -> ModelCard:
    return ModelCard(student={"arch": "resnet18"}, embed_dim=8, image_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                     teacher={"model": "VLKD-Tiny"}, labels={"id": ["a"], "ood": ["b"]}, kind=kind,
                     training={"data": {"root": "data/x"}}, **extra)


def _run_dir(tmp_path: Path, kind: str) -> Path:
    run = tmp_path / f"runs_{kind}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    write_card(run / RUN_MODEL_DIR, _card(kind))
    return run


def test_a_card_round_trips_with_its_kind_and_training_config(tmp_path):
    write_card(tmp_path, _card("grasp"))
    raw = json.loads((tmp_path / CARD_FILE).read_text())
    assert raw["format"] == "vlkd-model" and raw["version"] == VERSION == 2 and raw["kind"] == "grasp"
    card = read_card(tmp_path, expect_kind="grasp")
    assert card == _card("grasp") and card.training == {"data": {"root": "data/x"}}
    with pytest.raises(ModelDirError, match="refusing to write a card of kind 'teapot'"):
        write_card(tmp_path, _card("teapot"))


def test_a_run_dir_is_read_through_its_model_folder(tmp_path):
    run = _run_dir(tmp_path, "distill")
    assert resolve_model_dir(run) == run / RUN_MODEL_DIR and resolve_model_dir(run / RUN_MODEL_DIR) == run / "model"
    assert read_card(run).kind == read_card(run / RUN_MODEL_DIR).kind == "distill"
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelDirError, match="training run dir without a finished model .*rerun it with --resume"):
        read_card(unfinished)


@pytest.mark.parametrize("kind, expected, uses", [
    ("distill", "grasp", r"use it with `vlkd eval`, not with `vlkd serve`, `vlkd add-object`"),
    ("grasp", "distill", r"use it with `vlkd serve`, .*not with `vlkd eval`")])
def test_the_wrong_kind_is_named_with_the_commands_that_take_it(tmp_path, kind, expected, uses):
    run = _run_dir(tmp_path, kind)
    with pytest.raises(WrongKindError) as err:
        read_card(run, expect_kind=expected)
    message = str(err.value)
    assert message.startswith(f"{run / RUN_MODEL_DIR} is a {kind} model dir (kind {kind!r}); ")
    assert f"those need a {expected} model dir, which `vlkd {'train-grasp' if expected == 'grasp' else 'distill'}`" \
           in message
    assert __import__("re").search(uses, message), message
    assert isinstance(err.value, VlkdError) and isinstance(err.value, ValueError)  # the CLI: one line, exit 2


def test_a_card_of_another_version_or_a_bad_card_says_what_is_wrong(tmp_path):
    raw = {k: v for k, v in asdict(_card()).items() if k not in ("kind", "training")}
    cases = [({**raw, "version": 1}, r"format version 1 is not one this code reads \(v2\): write the model again "
                                     "with `vlkd distill` or `vlkd train-grasp`"),
             ({**raw, "version": 3, "kind": "distill"}, "format version 3 is not one this code reads"),
             ({**raw, "version": 2}, "kind None is not one of"),
             ({**raw, "version": 2, "kind": "distill", "colour": "red"}, "not a valid model card"),
             ({"format": "something-else"}, "is not 'vlkd-model'")]
    for i, (card, message) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / CARD_FILE).write_text(json.dumps(card))
        with pytest.raises(ModelDirError, match=message):
            read_card(tmp_path / str(i))
    with pytest.raises(ModelDirError, match="does not exist"):
        read_card(tmp_path / "nowhere", expect_kind="grasp")
    with pytest.raises(ModelDirError, match=r"not a grasp model dir \(train one with `vlkd train-grasp`\)"):
        read_card(tmp_path, expect_kind="grasp")


def test_layout_names():
    assert onnx_file("0123456789abcdef" * 4) == "onnx/student-0123456789abcdef.onnx"
    assert shots_file("tea cup", 3) == "objects/tea_cup-v0003.safetensors"
    assert file_slug("+Rich descriptions", "row") == "rich_descriptions" and file_slug("?!", "row") == "row"
