"""The model-dir format (`vlkd-model` v2): the one place that says what a model dir holds and reads its card.

A training job's `output_dir` is its *run dir*; what serving and evaluation need is written apart from it, to the
run dir's `model/` folder (the *model dir*, in the spirit of Hugging Face's `save_pretrained` folder). Only the
model dir is ever deployed or served; nothing reads the run dir after training. Few-shot learning writes the files
marked (*) below: into the model dir itself, or, with a state dir (`vlkd_formats.state_dir`: the per-user default
for the shipped model or a read-only model dir), into that dir, and the model dir is only read.

    OUTPUT/                          run dir: config.yaml, metrics.jsonl, checkpoints/, tensorboard/ (training only)
    OUTPUT/model/                    model dir (kind "distill" from `vlkd distill`, "grasp" from `vlkd train-grasp`)
        model.json                   ModelCard: format, version, kind, student architecture, input spec, teacher,
                                     labels, label texts, and `training` (the job's config: the data, teacher and
                                     texts `vlkd eval` / `vlkd eval-grasp` rebuild, so the model dir alone suffices)
        model.safetensors            the trained student weights
        text_features.safetensors    teacher text features: "id" (Y_id) and "ood" (Y_ood), rows in label order
                                     (grasp: also the negative prompts' "id_neg" / "ood_neg")
      kind "grasp" only:
        grasp.json                   GraspCard (`vlkd-grasp` v2): views, input size, prompts, scorer scale/bias,
                                     calibrated threshold, few-shot settings
        text_encoder/                the teacher's text tower as ONNX (text.onnx), its BPE tokenizer
                                     (tokenizer.json, HF `tokenizers`) and text_encoder.json (context length,
                                     start / end tokens): text features of any new name without torch
        replay.safetensors           a sample of training observations for few-shot replay, and held-out ID ones
                                     for validating a finetune and setting added objects' thresholds
        registry.json (*)            ObjectRegistry: known objects and the current weights file (the commit point)
        weights/vNNNN.safetensors (*)  finetuned weights, when registry.json names them instead of
                                     model.safetensors (nothing writes them yet)
        objects/<slug>-vNNNN.safetensors (*)  an object `add_object` taught: its shots and query vector
        .lock (*)                    the writer lock (`vlkd_formats.dir_lock`) a few-shot learner holds while it
                                     may commit; its pid and command are in it (no content otherwise)
        onnx/student-<sha16>.onnx (*)  the image encoder of the weights whose SHA-256 starts with <sha16>, written by
                                     `vlkd train-grasp` and `vlkd export --model DIR` (few-shot commits write none;
                                     the shipped model's at install: git holds no ONNX); never while loading
        onnx/student-<sha16>.int8.onnx (*)  its int8 copy (static quantization calibrated on the replay's training
                                     frames), written with it when its features stay within a median cosine of
                                     0.98 of the float32 ones on the held-out frames
        onnx/heldout-<sha16>[.int8].safetensors (*)  that encoder's (or its int8 copy's) features of
                                     replay.safetensors' held-out frames (a detector's most object-like
                                     locations), written with it: what a node's few-shot jobs judge a new object
                                     against without embedding the frames
      written on request (either kind): export/ (`vlkd export` of a distill model), eval/ (reports)

Every loader goes through `read_card(dir, expect_kind=...)`: it accepts a run dir that holds `model/` (and reads
that), names the kind when a dir of the other kind is handed over, and refuses any format version but v2.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError

FORMAT = "vlkd-model"
VERSION = 2
KIND_DISTILL, KIND_GRASP = "distill", "grasp"
KINDS = (KIND_DISTILL, KIND_GRASP)
GRASP_FORMAT = "vlkd-grasp"
GRASP_VERSION = 2

RUN_MODEL_DIR = "model"  # the model dir inside a run dir
RUN_CONFIG_FILE = "config.yaml"  # the run's config (run dir only)
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_FEATURES_FILE = "text_features.safetensors"
GRASP_FILE = "grasp.json"
TEXT_ENCODER_DIR = "text_encoder"
REPLAY_FILE = "replay.safetensors"
REGISTRY_FILE = "registry.json"
WEIGHTS_DIR, OBJECTS_DIR, ONNX_DIR = "weights", "objects", "onnx"

# What a freshly trained model dir of each kind holds.
DISTILL_ENTRIES = (CARD_FILE, WEIGHTS_FILE, TEXT_FEATURES_FILE)
GRASP_ENTRIES = DISTILL_ENTRIES + (GRASP_FILE, TEXT_ENCODER_DIR, REPLAY_FILE, REGISTRY_FILE)

# What a model dir of each kind is for (the wrong-kind message names both). Either kind can be exported
# (`vlkd export`) and be the student_init= of `vlkd train-grasp`.
USES = {KIND_DISTILL: "`vlkd eval`",
        KIND_GRASP: "`vlkd serve`, `vlkd add-object`, `vlkd eval-grasp` or GraspFeasibility"}
WRITERS = {KIND_DISTILL: "`vlkd distill`", KIND_GRASP: "`vlkd train-grasp`"}


class ModelDirError(VlkdError, ValueError):
    """A model dir is missing, incomplete, of another kind, or of a format this code does not read."""


class WrongKindError(ModelDirError):
    """A model dir of the other kind (a distill dir where a grasp dir is needed, or the reverse)."""


@dataclass
class ModelCard:
    """Everything needed to rebuild and feed the student, and to evaluate it, without the run dir."""

    student: dict[str, Any]
    embed_dim: int
    image_size: int
    mean: list[float]
    std: list[float]
    teacher: dict[str, Any]
    labels: dict[str, list[str]]
    texts: dict[str, list[list[str]]] = field(default_factory=dict)
    logit_scale: float = 1 / 0.07
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = KIND_DISTILL
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The model dir `path` names: `path` itself, or `path/model` when `path` is a run dir holding one."""
    path = Path(path)
    inner = path / RUN_MODEL_DIR
    return inner if (inner / CARD_FILE).is_file() else path


def read_card(model_dir: str | os.PathLike, expect_kind: str | None = None) -> ModelCard:
    """Read and check the card of a model dir (or of the run dir holding it as `model/`).

    Raises ModelDirError saying what is wrong; WrongKindError when `expect_kind` is given and the dir is of the
    other kind."""
    if expect_kind is not None and expect_kind not in KINDS:
        raise ValueError(f"expect_kind must be one of {KINDS}, got {expect_kind!r}")
    given = Path(model_dir)
    root = resolve_model_dir(given)
    path = root / CARD_FILE
    if not path.is_file():
        raise ModelDirError(_missing_card(given, expect_kind))
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ModelDirError(f"{path}: format {found!r} is not {FORMAT!r}: {root} is not a vlkd model dir")
    version = raw.get("version")
    if version != VERSION:
        raise ModelDirError(f"{path}: format version {version!r} is not one this code reads (v{VERSION}): write the "
                            f"model again with {WRITERS[KIND_DISTILL]} or {WRITERS[KIND_GRASP]}, or update vlkd_ros "
                            "if a newer one wrote it")
    if raw.get("kind") not in KINDS:
        raise ModelDirError(f"{path}: kind {raw.get('kind')!r} is not one of {KINDS}")
    try:
        card = ModelCard(**raw)
    except TypeError as err:
        raise ModelDirError(f"{path} is not a valid model card: {err}") from err
    if expect_kind is not None and card.kind != expect_kind:
        raise WrongKindError(wrong_kind_message(root, card.kind, expect_kind))
    return card


def write_card(model_dir: str | os.PathLike, card: ModelCard) -> Path:
    """Check and write `model_dir/model.json` atomically (write it last: a readable card means a complete dir)."""
    if card.kind not in KINDS or card.format != FORMAT or card.version != VERSION:
        raise ModelDirError(f"refusing to write a card of kind {card.kind!r}, format {card.format!r} v{card.version} "
                            f"(this code writes {FORMAT!r} v{VERSION}, kinds {KINDS})")
    return atomic_write_json(Path(model_dir) / CARD_FILE, asdict(card))


def wrong_kind_message(root: Path, kind: str, expected: str) -> str:
    """'<dir> is a distill model dir (kind 'distill'); use it with ..., not with ... (they need a grasp one)'."""
    return (f"{root} is a {kind} model dir (kind {kind!r}); use it with {USES[kind]}, not with {USES[expected]}: "
            f"those need a {expected} model dir, which {WRITERS[expected]} writes")


def _missing_card(given: Path, expect_kind: str | None) -> str:
    what = f"a {expect_kind} model dir" if expect_kind else "a vlkd model dir"
    writer = WRITERS[expect_kind] if expect_kind else "`vlkd distill` or `vlkd train-grasp`"
    if not given.exists():
        return f"{given} does not exist (expected {what}, written by {writer})"
    if (given / RUN_CONFIG_FILE).is_file() or (given / "checkpoints").is_dir():
        return (f"{given} is a training run dir without a finished model ({given / RUN_MODEL_DIR / CARD_FILE} not "
                f"found): let the run finish (rerun it with --resume)")
    return f"{given / CARD_FILE} not found: {given} is not {what} (train one with {writer})"


def onnx_file(weights_sha256: str, int8: bool = False) -> str:
    """Relative path of the ONNX image encoder of the weights with this SHA-256 (`int8`: its int8 copy)."""
    return f"{ONNX_DIR}/student-{weights_sha256[:16]}{'.int8' if int8 else ''}.onnx"


def held_out_features_file(weights_sha256: str, int8: bool = False) -> str:
    """Relative path of the held-out frames' features as that ONNX encoder (or its int8 copy) gives them."""
    return f"{ONNX_DIR}/heldout-{weights_sha256[:16]}{'.int8' if int8 else ''}.safetensors"


def shots_file(name: str, version: int) -> str:
    """Relative path of an object's shots saved at few-shot commit number `version`."""
    return f"{OBJECTS_DIR}/{file_slug(name, 'object')}-v{version:04d}.safetensors"


def file_slug(text: str, fallback: str = "object") -> str:
    """A name as a file or folder name: lowercase letters and digits, runs of anything else as one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or fallback
