"""The grasp model dir (kind "grasp", its grasp.json format `vlkd-grasp` v2): a vlkd model dir plus what grasp
inference and few-shot learning need on a robot without the training data or the teacher's image tower. The file
layout is in `vlkd_formats.model_dir`; `vlkd train-grasp` writes it to `output_dir/model/`. Loaded with a state dir
(`vlkd_formats.state_dir`), the registry and the weights it names come from the state dir once it holds them.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training.checkpoint import load_weights_into
from training.grasp.data import ObservationTransform
from training.grasp.export import export_student_onnx, export_text_encoder
from training.grasp.model import DetectorScorer, GraspScorer, build_scorer, vocabulary_tensors
from training.grasp.text import GraspTextConfig, TextTower
from training.model_dir import ModelCard, load_model_dir, write_model_dir
from training.students import Student
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.hashing import file_sha256
from vlkd_formats.model_dir import (GRASP_FILE, GRASP_FORMAT, GRASP_VERSION, KIND_GRASP, REPLAY_FILE,
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

    def onnx_path(self) -> Path:
        """Where the ONNX image encoder of the current weights is (or goes: `export_onnx`)."""
        return self.files.path(onnx_file(self.registry.weights_sha256))

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
    """Write every part of the grasp model dir `out` (`vlkd train-grasp` writes `output_dir/model`), the ONNX
    export of the weights among them (what backend "onnx", the node's default, runs); `tower` is the teacher's text
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
        onnx_path = root / onnx_file(registry.weights_sha256)
        export_student_onnx(student, grasp.image_size, onnx_path)
        features_path = write_served_held_out_features(root, registry.weights_sha256, grasp.head == "detector")
        for old in [*onnx_path.parent.glob("student-*.onnx"), *onnx_path.parent.glob("heldout-*.safetensors")]:
            if old not in (onnx_path, features_path):  # exports of weights an earlier run wrote here
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


def export_onnx(model_dir: str | os.PathLike) -> tuple[Path, float]:
    """`vlkd export` of a grasp model dir: write the image encoder of the registry's current weights to
    `onnx/student-<sha16>.onnx`, where backend "onnx" loads it, with its features of the held-out frames beside it,
    and the ONNX text encoder when the dir has only the
    text tower's weights (`text_encoder/text.safetensors`, which it then drops); returns (path, max deviation from
    PyTorch)."""
    gm = load_grasp_model_dir(model_dir)
    text = gm.root / TEXT_ENCODER_DIR
    if not (text / TEXT_CARD).is_file():
        export_text_encoder(TextTower.load(text), text)
        for old in (TextTower.WEIGHTS, TextTower.CONFIG):
            (text / old).unlink()
    path = gm.onnx_path()
    diff = export_student_onnx(gm.student, gm.grasp.image_size, path)
    write_served_held_out_features(gm.root, gm.registry.weights_sha256, gm.grasp.head == "detector", gm.files)
    return path, diff


def write_served_held_out_features(root: Path, weights_sha256: str, detector: bool, files: ModelFiles | None = None
                                   ) -> Path:
    """Store the replay file's held-out frames' features as the ONNX export of these weights gives them on one thread
    (as a node does by default), beside it: a node's few-shot jobs read them instead of embedding the frames."""
    files = files or ModelFiles(root, None)
    encoder = onnx_session(files.path(onnx_file(weights_sha256)), threads=1)
    held = HeldOut.read(root / REPLAY_FILE, files.path(held_out_features_file(weights_sha256)))
    return write_held_out_features(held.features_path, held_out_features(
        lambda images: image_features(encoder, images), held, detector), held)
