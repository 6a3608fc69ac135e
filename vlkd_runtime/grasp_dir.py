"""Reading a grasp model dir for serving, without torch: its cards (`grasp.json`, `vlkd-grasp` v2), the registry
it serves (its state dir's once that holds one), the held-out frames few-shot validation scores against, and the
query vectors and shots of objects learnt from shots (safetensors, read as numpy). The layout is in
`vlkd_formats.model_dir`; `training.grasp.model_dir` writes it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeVar

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from vlkd_formats.model_dir import (GRASP_FILE, GRASP_FORMAT, GRASP_VERSION, KIND_GRASP, REPLAY_FILE,
                                    TEXT_ENCODER_DIR, TEXT_FEATURES_FILE, ModelCard, ModelDirError,
                                    held_out_features_file, onnx_file, read_card, resolve_model_dir)
from vlkd_formats.object_registry import ObjectRegistry, read_registry
from vlkd_formats.state_dir import ModelFiles, StateCard, check_state_dir, model_name
from vlkd_runtime.observation import ObservationTransform
from vlkd_runtime.scoring import DetectorScorer, Scorer
from vlkd_runtime.text import PromptConfig

HELD_OUT_INPUTS = "val_inputs"  # the held-out frames' key in replay.safetensors (their targets: "val_targets")


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
    local_weight: float | None = None  # a dense model's local-aggregation weight (None: global features only)
    head: str = "embedding"  # "detector": per-location detections (vlkd_runtime.scoring.DETECTOR_CHANNELS)
    match_vocabulary: bool = False  # a detector matches names against its label names (DetectorScorer.vocabulary)
    image_weight: float = 0.5  # a detector with a distilled embedding: its match's weight (DetectorScorer.image_weight)
    format: str = GRASP_FORMAT
    version: int = GRASP_VERSION

    def prompts(self) -> PromptConfig:
        """How the model builds an object's prompts."""
        return PromptConfig.from_card(self.text)


Card = TypeVar("Card", bound=GraspCard)


def read_grasp_card(model_dir: str | os.PathLike, card_type: type[Card] = GraspCard) -> Card:
    """Read and check `grasp.json` of a grasp model dir (or of the run dir holding it) as `card_type`."""
    root = resolve_model_dir(model_dir)
    path = root / GRASP_FILE
    if not path.is_file():
        read_card(root, KIND_GRASP)  # says what the dir is instead, when it is not a grasp model dir
        raise ModelDirError(f"{path} not found: {root} is an incomplete grasp model dir")
    try:
        card = card_type(**json.loads(path.read_text()))
    except (TypeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{path} is not a valid grasp card: {err}") from err
    if card.format != GRASP_FORMAT or card.version != GRASP_VERSION:
        raise ModelDirError(f"{path}: format {card.format!r} v{card.version} is not {GRASP_FORMAT!r} "
                            f"v{GRASP_VERSION}")
    return card


def base_state_card(root: Path) -> StateCard:
    """What a state dir overlaying the model dir `root` records of it: its name, and the weights its registry names
    (ModelDirError naming what `root` is when it is not a grasp model dir)."""
    read_card(root, KIND_GRASP)
    registry = read_registry(root)
    return StateCard(model_name(root), registry.weights_sha256, registry.model_version)


def served_registry(files: ModelFiles) -> ObjectRegistry:
    """The registry a model serves: its state dir's once that holds one, else the model dir's; StateDirError when
    the state dir belongs to another model."""
    if files.state is not None:
        check_state_dir(files.state, files.root, base_state_card(files.root))
    return read_registry(files.registry_dir())


@dataclass
class HeldOut:
    """Held-out training frames of a model dir: which trained objects are graspable in each (`targets` (N,
    len(names)) in {0, 1}), and their transformed inputs, read from `path` a few at a time (`batches`);
    `features_path`: where the served weights' ONNX encoder's features of them are stored
    (`vlkd_runtime.held_out_features`), when it was written."""

    names: list[str]
    targets: np.ndarray
    path: Path
    features_path: Path | None = None

    @classmethod
    def read(cls, replay: Path, features_path: Path | None = None) -> "HeldOut":
        """The held-out part of a replay file (`replay.safetensors`): names and targets; inputs read on demand."""
        with safe_open(str(replay), "np") as f:
            return cls(json.loads(f.metadata()["names"]), f.get_tensor("val_targets").astype(np.float32), replay,
                       features_path)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The inputs (n <= size, C, S, S) float32, in order: never all of them in memory at once."""
        with safe_open(str(self.path), "np") as f:
            frames, n = f.get_slice(HELD_OUT_INPUTS), len(self.targets)
            for start in range(0, n, size):
                yield frames[start:min(start + size, n)].astype(np.float32)  # a slice past the end is refused


@dataclass
class ServedModelDir:
    """A grasp model dir as serving reads it: cards, the served registry, where its files are (`files`: the model
    dir `root` and the state dir overlaying it, if any)."""

    root: Path
    card: ModelCard
    grasp: GraspCard
    registry: ObjectRegistry
    files: ModelFiles

    def transform(self) -> ObservationTransform:
        """The observation transform the model was trained with."""
        return ObservationTransform(self.grasp.views, self.grasp.image_size, self.card.mean, self.card.std,
                                    self.grasp.depth_max_m)

    def scorer(self) -> Scorer | DetectorScorer:
        """The trained scorer's constants (a detector's match scale and bias, and its vocabulary when the card
        matches names against it, for a detector model)."""
        if self.grasp.head == "detector":
            feats = load_file(str(self.root / TEXT_FEATURES_FILE)) if self.grasp.match_vocabulary else None
            return DetectorScorer(self.grasp.logit_scale, self.grasp.logit_bias,
                                  None if feats is None else label_vocabulary(feats), self.grasp.image_weight)
        return Scorer(self.grasp.logit_scale, self.grasp.logit_bias, self.grasp.local_weight)

    def onnx_path(self, registry: ObjectRegistry | None = None, int8: bool = False) -> Path:
        """Where the ONNX image encoder (`int8`: its int8 copy) of the current weights (or of `registry`'s) is."""
        return self.files.path(onnx_file((registry or self.registry).weights_sha256, int8))

    def held_out_features_path(self, int8: bool = False) -> Path:
        """Where that encoder's features of the held-out frames are stored (`vlkd_runtime.held_out_features`)."""
        return self.files.path(held_out_features_file(self.registry.weights_sha256, int8))

    def text_encoder_dir(self) -> Path:
        """The folder of the teacher's text tower (`vlkd_runtime.text.OnnxTextEncoder`)."""
        return self.root / TEXT_ENCODER_DIR

    def label_features(self) -> dict[tuple[str, ...], np.ndarray]:
        """The teacher's features (D,) of its trained labels' positive prompts (the card's label texts) by prompt
        texts: what a text encoder gives them, without loading one."""
        feats = load_file(str(self.root / TEXT_FEATURES_FILE))
        return {tuple(texts): feats[part][i].astype(np.float32) for part, rows in self.card.texts.items()
                if part in feats for i, texts in enumerate(rows)}

    def held_out(self, features_path: Path | None = None) -> HeldOut:
        """The held-out training frames of `replay.safetensors` (its validation part), and where their features by
        the serving encoder are stored, if given (`held_out_features_path`)."""
        return HeldOut.read(self.root / REPLAY_FILE, features_path)


def label_vocabulary(text_features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The vocabulary a detector matches names against, float32: the text features of the model's trained and
    held-out label names ("id", "ood" of `text_features.safetensors`), and their negative prompts' when the model
    has them."""
    parts = [p for p in ("id", "ood") if p in text_features]
    pos = np.concatenate([text_features[p] for p in parts]).astype(np.float32)
    if any(f"{p}_neg" not in text_features for p in parts):
        return pos, None
    return pos, np.concatenate([text_features[f"{p}_neg"] for p in parts]).astype(np.float32)


def read_served_model_dir(model_dir: str | os.PathLike, state_dir: str | os.PathLike | None = None
                          ) -> ServedModelDir:
    """Read a grasp model dir (or the run dir holding it) overlaid by `state_dir` if given (`served_registry`); a
    distill model dir is refused with what to do instead. Reads no weights."""
    root = resolve_model_dir(model_dir)
    card = read_card(root, KIND_GRASP)
    grasp = read_grasp_card(root)
    files = ModelFiles(root, None if state_dir is None else Path(state_dir))
    return ServedModelDir(root, card, grasp, served_registry(files), files)


def read_tensor(path: str | os.PathLike, key: str) -> np.ndarray:
    """One tensor of a safetensors file as float32 numpy."""
    with safe_open(str(path), "np") as f:
        return f.get_tensor(key).astype(np.float32)
