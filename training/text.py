"""Label texts l(y): prompt templates, readable label names and rich descriptions from the usual file formats.

Description files:
- YAML/JSON map `{label: description}` (or `{label: [descriptions]}`, the first is used),
- the anchor repo's `label2text.txt` (`folder index readable_name` per line) giving readable names,
- the anchor repo's `chatgpt.txt`: one description per line, in label order.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vlkd_formats.errors import VlkdError


class LabelTextError(VlkdError, ValueError):
    """A label-text file does not match the dataset's labels."""


@dataclass
class LabelTextConfig:
    """How the text of a label is built: template.format(name) followed by its description."""

    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    descriptions: str | None = None
    use_descriptions: bool = False
    label2text: str | None = None

    def validate(self) -> None:
        """Check every template has exactly one `{}` slot."""
        if not self.templates:
            raise LabelTextError("text.templates must hold at least one template")
        for t in self.templates:
            if t.count("{}") != 1:
                raise LabelTextError(f"template {t!r} must contain exactly one '{{}}' for the label name")


def readable_name(label: str) -> str:
    """Folder-style label to words: 'coffee_mug' -> 'coffee mug'."""
    return label.replace("_", " ").strip()


def load_label2text(path: str | os.PathLike, labels: list[str]) -> dict[str, str]:
    """Read the anchor repo's `label2text.txt`: `folder index readable_name` -> {folder: readable name}."""
    names: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3:
            raise LabelTextError(f"{path}:{lineno}: expected 'folder index name', got {line!r}")
        names[parts[0]] = readable_name(" ".join(parts[2:]))
    _check_known(names, labels, path)
    return names


def load_descriptions(path: str | os.PathLike, labels: list[str]) -> dict[str, str]:
    """Read descriptions for `labels` from a YAML/JSON map or a one-per-line text file in label order."""
    path = Path(path)
    if not path.is_file():
        raise LabelTextError(f"description file {path} does not exist")
    if path.suffix in (".yaml", ".yml", ".json"):
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise LabelTextError(f"{path}: expected a mapping label -> description")
        out = {str(k): (v[0] if isinstance(v, list) else str(v)).strip() for k, v in raw.items()}
        _check_known(out, labels, path)
        return out
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != len(labels):
        raise LabelTextError(
            f"{path} has {len(lines)} descriptions but the dataset has {len(labels)} labels; "
            "a one-per-line file must hold exactly one line per label, in label order")
    return dict(zip(labels, lines))


def label_texts(labels: list[str], config: LabelTextConfig, names: dict[str, str] | None = None,
                descriptions: dict[str, str] | None = None) -> list[list[str]]:
    """Texts of each label, one per template: template.format(readable name) [+ ' ' + description]."""
    names = names or {}
    descriptions = descriptions or {}
    texts = []
    for label in labels:
        name = names.get(label, readable_name(label))
        desc = descriptions.get(label, "") if config.use_descriptions else ""
        texts.append([(t.format(name) + (" " + desc if desc else "")).strip() for t in config.templates])
    return texts


def resolve_label_texts(labels: list[str], config: LabelTextConfig,
                        dataset_descriptions: dict[str, str] | None = None) -> list[list[str]]:
    """Label texts from the config's files, falling back to descriptions the dataset dir carries."""
    names = load_label2text(config.label2text, labels) if config.label2text else None
    if config.descriptions:
        descriptions = load_descriptions(config.descriptions, labels)
    else:
        descriptions = dataset_descriptions or {}
    if config.use_descriptions:
        missing = [lab for lab in labels if not descriptions.get(lab)]
        if missing:
            raise LabelTextError(
                f"text.use_descriptions is on but {len(missing)} label(s) have no description, e.g. {missing[:5]}")
    return label_texts(labels, config, names, descriptions)


def _check_known(mapping: dict[str, str], labels: list[str], path: str | os.PathLike) -> None:
    unknown = sorted(set(mapping) - set(labels))
    if unknown:
        raise LabelTextError(f"{path} names labels the dataset does not have: {unknown[:5]}; "
                             f"dataset labels are e.g. {labels[:5]}")
