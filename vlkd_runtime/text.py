"""The text side of a grasp model without torch: an object name's prompts, the teacher's tokenisation (open_clip's
SimpleTokenizer as a Hugging Face `tokenizers` BPE saved with the model) and its text tower exported to ONNX, in the
model dir's `text_encoder/` (written by `training.grasp.export.export_text_encoder`)."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlkd_formats.errors import VlkdError
from vlkd_runtime.onnx_session import onnx_session

TEXT_ONNX = "text.onnx"
TOKENIZER_FILE = "tokenizer.json"
TEXT_CARD = "text_encoder.json"
TEXT_FORMAT, TEXT_VERSION = "vlkd-text-encoder", 1
# open_clip's SimpleTokenizer splits cleaned text into these pieces before BPE (its special tokens aside)
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TextEncoderError(VlkdError, ValueError):
    """A model dir's text encoder is missing or of another format."""


@dataclass(frozen=True)
class PromptConfig:
    """How an object's prompts are built (the `text` entry of grasp.json): template.format(name) [+ description];
    `negative_templates` say it is not there (empty: one prompt per name)."""

    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    negative_templates: list[str] = field(default_factory=list)
    use_descriptions: bool = False

    @classmethod
    def from_card(cls, text: dict[str, Any]) -> "PromptConfig":
        """The prompt settings of a grasp card's `text` dict (other keys are the trainer's)."""
        return cls(list(text.get("templates") or cls().templates), list(text.get("negative_templates") or []),
                   bool(text.get("use_descriptions", False)))


def prompt_texts(names: list[str], config: PromptConfig, descriptions: dict[str, str] | None = None
                 ) -> tuple[list[list[str]], list[list[str]] | None]:
    """(positive texts per name, negative texts per name or None without negative templates): each template filled
    with the name ('_' read as a space), then its description when the config uses descriptions."""
    descriptions = descriptions or {}

    def texts(templates: list[str]) -> list[list[str]]:
        out = []
        for name in names:
            desc = descriptions.get(name, "") if config.use_descriptions else ""
            readable = name.replace("_", " ").strip()
            out.append([(t.format(readable) + (" " + desc if desc else "")).strip() for t in templates])
        return out

    return texts(config.templates), (texts(config.negative_templates) if config.negative_templates else None)


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning, the one its SimpleTokenizer applies: ftfy's fixes, HTML entities unescaped
    twice, whitespace runs as one space, lower case."""
    import ftfy

    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).lower()


class ClipTokenizer:
    """Texts -> token ids (N, context_length) int64 exactly as open_clip's SimpleTokenizer: start token, BPE of the
    cleaned text, end token, zero padding; an over-long text is cut and ends with the end token."""

    def __init__(self, path: str | Path, context_length: int, sot_token_id: int, eot_token_id: int):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self.context_length, self.sot, self.eot = int(context_length), int(sot_token_id), int(eot_token_id)

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), np.int64)
        encoded = self._tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        for i, enc in enumerate(encoded):
            ids = [self.sot] + enc.ids + [self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot
            out[i, :len(ids)] = ids
        return out


class OnnxTextEncoder:
    """A model dir's `text_encoder/`: prompts per label -> (C, D) float32, per label the renormalised mean of its
    texts' normalised features (as the teacher encodes label texts); thread-safe."""

    def __init__(self, folder: str | Path, threads: int = 0, cuda: bool = False):
        folder = Path(folder)
        path = folder / TEXT_CARD
        if not path.is_file():
            raise TextEncoderError(f"{path} not found: the model dir carries no ONNX text encoder (rebuild it, or "
                                   "`vlkd export --model DIR` to add one)")
        card = json.loads(path.read_text())
        if card.get("format") != TEXT_FORMAT or card.get("version") != TEXT_VERSION:
            raise TextEncoderError(f"{path}: format {card.get('format')!r} v{card.get('version')} is not "
                                   f"{TEXT_FORMAT!r} v{TEXT_VERSION}")
        self.embed_dim = int(card["embed_dim"])
        self.tokenizer = ClipTokenizer(folder / TOKENIZER_FILE, card["context_length"], card["sot_token_id"],
                                       card["eot_token_id"])
        self._session = onnx_session(folder / TEXT_ONNX, threads, cuda)

    def features(self, tokens: np.ndarray) -> np.ndarray:
        """The text tower's raw features (N, D) of token ids (N, context_length)."""
        return self._session.run(["features"], {"tokens": tokens})[0]

    def encode(self, texts_per_label: list[list[str]]) -> np.ndarray:
        """(C, D) float32 normalised features, one row per label."""
        flat = [t for texts in texts_per_label for t in texts]
        feats = normalized(self.features(self.tokenizer(flat)).astype(np.float32))
        out, start = [], 0
        for texts in texts_per_label:
            out.append(normalized(feats[start:start + len(texts)].mean(0)))
            start += len(texts)
        return np.stack(out) if out else np.zeros((0, self.embed_dim), np.float32)


def normalized(x: np.ndarray) -> np.ndarray:
    """x / max(|x|, 1e-12) over the last axis (torch's F.normalize)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
