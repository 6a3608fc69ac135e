"""The grasp model dir (format `vlkd-grasp` v1): a vlkd model dir plus what grasp inference and few-shot
learning need on a robot without the training data or the teacher's image tower.

    model.json, model.safetensors, text_features.safetensors   the vlkd model dir (student, card, Y_id/Y_ood
                                                                prompt features "id"/"ood" and "id_neg"/"ood_neg")
    grasp.json              GraspCard: views, input size, prompts, scorer scale/bias, calibrated threshold
    text_encoder/           the teacher's text tower (open_clip `local-dir:` config + weights)
    replay.safetensors      a sample of training observations (+ labels, teacher features) for few-shot replay,
                            and held-out ID observations for validating a finetune before it is swapped in
    registry.json           ObjectRegistry: known objects and the current weights file (the commit point)
    weights/, objects/      weights and shots written by few-shot learning (`add_object`)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training.checkpoint import CheckpointError, load_weights_into
from training.grasp.data import ObservationTransform
from training.grasp.model import GraspScorer
from training.grasp.text import GraspTextConfig, TextTower
from training.model_dir import ModelCard, load_model_dir, write_model_dir
from training.students import Student
from training.teacher import file_sha256
from vlkd_formats.atomic_io import atomic_write, atomic_write_json
from vlkd_formats.object_registry import ObjectEntry, ObjectRegistry, read_registry, write_registry

FORMAT = "vlkd-grasp"
VERSION = 1
GRASP_FILE = "grasp.json"
TEXT_ENCODER_DIR = "text_encoder"
REPLAY_FILE = "replay.safetensors"


@dataclass
class GraspCard:
    """Grasp-specific settings of a model dir."""

    views: list[str]
    image_size: int
    depth_max_m: float
    text: dict[str, Any]
    logit_scale: float
    logit_bias: float
    threshold: float
    calibration: dict[str, Any]
    objects: dict[str, Any]
    fewshot: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

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
    """A loaded grasp model dir: the student with the registry's current weights, its cards and registry."""

    root: Path
    student: Student
    card: ModelCard
    grasp: GraspCard
    registry: ObjectRegistry
    text_features: dict[str, torch.Tensor]

    def transform(self) -> ObservationTransform:
        """The observation transform the model was trained with."""
        return ObservationTransform(self.grasp.views, self.grasp.image_size, self.card.mean, self.card.std,
                                    self.grasp.depth_max_m)

    def scorer(self) -> GraspScorer:
        """The trained scorer (scale and bias)."""
        return GraspScorer(self.grasp.logit_scale, self.grasp.logit_bias)

    def text_tower(self, device: str | torch.device = "cpu") -> TextTower:
        """The teacher's text tower saved with the model."""
        return TextTower.load(self.root / TEXT_ENCODER_DIR, device)

    def replay(self) -> ReplayBuffer:
        """The replay/validation buffer."""
        return ReplayBuffer.load(self.root / REPLAY_FILE)


def write_grasp_model_dir(out: str | os.PathLike, student: Student, card: ModelCard,
                          text_features: dict[str, torch.Tensor], grasp: GraspCard, tower: TextTower,
                          replay: ReplayBuffer, objects: list[ObjectEntry]) -> Path:
    """Write every part; the registry (objects + current weights) goes last, so a dir with a readable
    registry is complete."""
    out = Path(out)
    write_model_dir(out, student, card, text_features)
    tower.save(out / TEXT_ENCODER_DIR)
    replay.save(out / REPLAY_FILE)
    atomic_write_json(out / GRASP_FILE, asdict(grasp))
    registry = ObjectRegistry(weights="model.safetensors", weights_sha256=file_sha256(out / "model.safetensors"))
    for entry in objects:
        registry = registry.with_object(entry)
    write_registry(out, registry)
    return out


def read_grasp_card(model_dir: str | os.PathLike) -> GraspCard:
    """Read and check `grasp.json`."""
    path = Path(model_dir) / GRASP_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {model_dir} is not a grasp model dir "
                              "(train one with `vlkd train-grasp`)")
    card = GraspCard(**json.loads(path.read_text()))
    if card.format != FORMAT or card.version != VERSION:
        raise CheckpointError(f"{path}: format {card.format!r} v{card.version} is not {FORMAT!r} v{VERSION}")
    return card


def load_grasp_model_dir(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> GraspModelDir:
    """Load the student with the weights the registry names as current (eval mode, on `device`)."""
    root = Path(model_dir)
    registry = read_registry(root)
    grasp = read_grasp_card(root)
    student, card, text = load_model_dir(root, "cpu")
    if registry.weights != "model.safetensors":
        load_weights_into(student, root / registry.weights, "few-shot weights")
    return GraspModelDir(root, student.to(device).eval(), card, grasp, registry, text)
