"""The grasp model dir (kind "grasp", its grasp.json format `vlkd-grasp` v2): a vlkd model dir plus what grasp
inference and few-shot learning need on a robot without the training data or the teacher's image tower. The file
layout is in `vlkd_formats.model_dir`; `vlkd train-grasp` writes it to `output_dir/model/`. Loaded with a state dir
(`vlkd_formats.state_dir`), the registry and the weights it names come from the state dir once it holds them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training.checkpoint import load_weights_into
from training.grasp.data import ObservationTransform
from training.grasp.export import (INT8_MIN_COSINE, calibration_frames, export_student_onnx, export_text_encoder,
                                   quantize_student_onnx)
from training.grasp.model import DetectorScorer, GraspScorer, build_scorer, vocabulary_tensors
from training.grasp.text import GraspTextConfig, TextTower
from training.model_dir import ModelCard, load_model_dir, write_model_dir
from training.students import Student
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.hashing import file_sha256
from vlkd_formats.model_dir import (GRASP_FILE, GRASP_FORMAT, GRASP_VERSION, KIND_GRASP, ONNX_DIR, REPLAY_FILE,
                                    TEXT_ENCODER_DIR, WEIGHTS_FILE, held_out_features_file, onnx_file, read_card,
                                    resolve_model_dir)
from vlkd_formats.object_registry import ObjectEntry, ObjectRegistry, write_registry
from vlkd_formats.state_dir import ModelFiles
from vlkd_runtime.grasp_dir import GraspCard as RuntimeGraspCard
from vlkd_runtime.grasp_dir import HeldOut
from vlkd_runtime.grasp_dir import read_grasp_card as read_card_as
from vlkd_runtime.grasp_dir import served_registry
from vlkd_runtime.held_out_features import held_out_features, write_held_out_features
from vlkd_runtime.onnx_session import image_features, onnx_session
from vlkd_runtime.text import TEXT_CARD, OnnxTextEncoder, prompt_texts

FORMAT, VERSION = GRASP_FORMAT, GRASP_VERSION
log = logging.getLogger(__name__)


@dataclass
class GraspCard(RuntimeGraspCard):
    """Grasp-specific settings of a model dir (`vlkd_runtime.grasp_dir.GraspCard`), with the trainer's prompt
    config."""

    def text_config(self) -> GraspTextConfig:
        """The prompt config the model was trained with."""
        return GraspTextConfig(**self.text)


@dataclass
class ReplayBuffer:
    """Observations kept for few-shot replay (`inputs`, graspable `targets` over `names`, teacher features)
    and for validation (`val_inputs`, `val_targets`); inputs are transformed tensors stored as float16."""

    names: list[str]
    inputs: torch.Tensor
    targets: torch.Tensor
    teacher: torch.Tensor | None
    val_inputs: torch.Tensor
    val_targets: torch.Tensor

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as safetensors (names in the metadata)."""
        tensors = {"inputs": self.inputs.half(), "targets": self.targets.to(torch.uint8),
                   "val_inputs": self.val_inputs.half(), "val_targets": self.val_targets.to(torch.uint8)}
        if self.teacher is not None:
            tensors["teacher"] = self.teacher.float()
        atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                                  metadata={"names": json.dumps(self.names)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReplayBuffer":
        """Read a replay file (inputs back as float32)."""
        with safe_open(str(path), "pt") as f:
            names = json.loads(f.metadata()["names"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        return cls(names, t["inputs"].float(), t["targets"].float(), t.get("teacher"),
                   t["val_inputs"].float(), t["val_targets"].float())


@dataclass
class GraspModelDir:
    """A loaded grasp model dir: the student with the served registry's current weights, its cards, the served
    registry and where its files are (`files`: the model dir `root` and the state dir overlaying it, if any)."""

    root: Path
    student: Student
    card: ModelCard
    grasp: GraspCard
    registry: ObjectRegistry
    text_features: dict[str, torch.Tensor]
    files: ModelFiles

    def transform(self) -> ObservationTransform:
        """The observation transform the model was trained with."""
        return ObservationTransform(self.grasp.views, self.grasp.image_size, self.card.mean, self.card.std,
                                    self.grasp.depth_max_m)

    def scorer(self) -> GraspScorer | DetectorScorer:
        """The trained scorer (scale and bias; a detector's vocabulary when its card matches names against one)."""
        vocabulary = vocabulary_tensors(self.text_features) if self.grasp.match_vocabulary else None
        return build_scorer(self.grasp.head, self.grasp.logit_scale, self.grasp.logit_bias, self.grasp.local_weight,
                            vocabulary, self.grasp.image_weight)

    def replay(self) -> ReplayBuffer:
        """The replay/validation buffer."""
        return ReplayBuffer.load(self.root / REPLAY_FILE)

    def onnx_path(self, int8: bool = False) -> Path:
        """Where the ONNX image encoder (`int8`: its int8 copy) of the current weights is (or goes: `export_onnx`)."""
        return self.files.path(onnx_file(self.registry.weights_sha256, int8))

    def name_features(self, names: list[str], descriptions: dict[str, str] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positive/negative prompt features (N, D) of `names` with the model's prompts and `descriptions`, from its
        ONNX text encoder: what serving scores a name with."""
        encoder = OnnxTextEncoder(self.root / TEXT_ENCODER_DIR)
        pos, neg = prompt_texts(names, self.grasp.prompts(), descriptions)
        return (torch.from_numpy(encoder.encode(pos)).float(),
                None if neg is None else torch.from_numpy(encoder.encode(neg)).float())


def write_grasp_model_dir(out: str | os.PathLike, student: Student, card: ModelCard,
                          text_features: dict[str, torch.Tensor], grasp: GraspCard, tower: TextTower | Path,
                          replay: ReplayBuffer, objects: list[ObjectEntry]) -> Path:
    """Write every part of the grasp model dir `out` (`vlkd train-grasp` writes `output_dir/model`), the serving
    files of the weights among them (`write_serving_files`: what the node runs); `tower` is the teacher's text
    tower to export, or another model dir's `text_encoder/` to copy. The registry (objects + current weights), then
    the card go last, so a dir with a readable card is complete."""
    def grasp_parts(root: Path) -> None:
        if isinstance(tower, Path):
            shutil.copytree(tower, root / TEXT_ENCODER_DIR, dirs_exist_ok=True)
        else:
            export_text_encoder(tower, root / TEXT_ENCODER_DIR)
        replay.save(root / REPLAY_FILE)
        atomic_write_json(root / GRASP_FILE, asdict(grasp))
        registry = ObjectRegistry(weights=WEIGHTS_FILE, weights_sha256=file_sha256(root / WEIGHTS_FILE))
        written = write_serving_files(root, ModelFiles(root, None), student, card, grasp,
                                      registry.weights_sha256).files
        for old in (root / ONNX_DIR).iterdir():
            if old not in written:  # exports of weights an earlier run wrote here
                old.unlink(missing_ok=True)
        for entry in objects:
            registry = registry.with_object(entry)
        write_registry(root, registry)

    return write_model_dir(out, student, replace(card, kind=KIND_GRASP), text_features, grasp_parts)


def read_grasp_card(model_dir: str | os.PathLike) -> GraspCard:
    """Read and check `grasp.json` of a grasp model dir (or of the run dir holding it)."""
    return read_card_as(model_dir, GraspCard)


def load_grasp_model_dir(model_dir: str | os.PathLike, device: str | torch.device = "cpu",
                         state_dir: str | os.PathLike | None = None) -> GraspModelDir:
    """Load the student with the weights the served registry names as current (eval mode, on `device`) from a grasp
    model dir or the run dir holding it, overlaid by `state_dir` if given (`served_registry`); a distill model dir
    is refused with what to do instead."""
    root = resolve_model_dir(model_dir)
    read_card(root, KIND_GRASP)
    grasp = read_grasp_card(root)
    files = ModelFiles(root, None if state_dir is None else Path(state_dir))
    registry = served_registry(files)
    student, card, text = load_model_dir(root, "cpu", KIND_GRASP)
    if registry.weights != WEIGHTS_FILE:
        load_weights_into(student, files.path(registry.weights), "few-shot weights")
    return GraspModelDir(root, student.to(device).eval(), card, grasp, registry, text, files)


def export_onnx(model_dir: str | os.PathLike) -> ServingFiles:
    """`vlkd export` of a grasp model dir: write the serving files of the registry's current weights
    (`write_serving_files`), and the ONNX text encoder when the dir has only the text tower's weights
    (`text_encoder/text.safetensors`, which it then drops)."""
    gm = load_grasp_model_dir(model_dir)
    text = gm.root / TEXT_ENCODER_DIR
    if not (text / TEXT_CARD).is_file():
        export_text_encoder(TextTower.load(text), text)
        for old in (TextTower.WEIGHTS, TextTower.CONFIG):
            (text / old).unlink()
    return write_serving_files(gm.root, gm.files, gm.student, gm.card, gm.grasp, gm.registry.weights_sha256)


@dataclass
class ServingFiles:
    """What `write_serving_files` wrote: the ONNX encoder (its largest deviation from PyTorch), its int8 copy when
    that stays faithful (the median cosine of its features to the float32 ones on held-out frames), and each one's
    features of the held-out frames."""

    onnx: Path
    max_abs_diff: float
    int8: Path | None
    int8_cosine: float
    held_out_features: list[Path]

    @property
    def files(self) -> list[Path]:
        """Every file written."""
        return [self.onnx, *([self.int8] if self.int8 else []), *self.held_out_features]


def write_serving_files(root: Path, files: ModelFiles, student: Student, card: ModelCard, grasp: GraspCard,
                        weights_sha256: str) -> ServingFiles:
    """Export the image encoder of these weights to `onnx/` (backend "onnx"), its int8 copy calibrated on the replay
    file's training frames and photometric variants of them (backend "onnx-int8"; not written when unfaithful:
    `quantize_student_onnx`), and each one's features of the held-out frames on one thread, as a node computes them
    by default (its few-shot jobs read them instead of embedding the frames)."""
    fp32, int8 = files.path(onnx_file(weights_sha256)), files.path(onnx_file(weights_sha256, int8=True))
    diff = export_student_onnx(student, grasp.image_size, fp32)
    with safe_open(str(root / REPLAY_FILE), "np") as f:
        val = f.get_slice("val_inputs")
        train, check = f.get_tensor("inputs").astype(np.float32), val[:min(32, val.get_shape()[0])].astype(np.float32)
    calibration = calibration_frames(train, grasp.views, card.mean, card.std)
    cosine = quantize_student_onnx(fp32, calibration, check, int8, INT8_MIN_COSINE)
    if not int8.is_file():
        files.path(held_out_features_file(weights_sha256, int8=True)).unlink(missing_ok=True)
        log.warning("%s: no int8 encoder: its features keep a median cosine of %.3f to the float32 ones (< %g); "
                    "backend onnx-int8 cannot serve these weights", root, cosine, INT8_MIN_COSINE)
    features = []
    for quantized, encoder_path in ((False, fp32), (True, int8)):
        if not encoder_path.is_file():
            continue
        encoder = onnx_session(encoder_path, threads=1)
        held = HeldOut.read(root / REPLAY_FILE, files.path(held_out_features_file(weights_sha256, quantized)))
        features.append(write_held_out_features(held.features_path, held_out_features(
            lambda images: image_features(encoder, images), held, grasp.head == "detector"), held))
    return ServingFiles(fp32, diff, int8 if int8.is_file() else None, cosine, features)
