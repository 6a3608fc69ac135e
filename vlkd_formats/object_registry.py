"""The object registry of a grasp model dir (`registry.json`, version 1): which objects the model knows, their
descriptions and few-shot shots, and which weights file is current. Replacing this one file atomically is
the commit point of every change, so a crash leaves either the old or the new registry, never a mix.
The model dir's layout around it is in `vlkd_formats.model_dir`.
"""
from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import REGISTRY_FILE, WEIGHTS_FILE

FORMAT = "vlkd-object-registry"
VERSION = 1
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 500


class RegistryError(VlkdError, ValueError):
    """The registry file is missing, unreadable or of another format."""


# Characters a name may not hold, by Unicode category: invisible or layout-changing ones (a NUL, a bidi override,
# a zero-width joiner, a line break) would make two names look alike, or a log line or a listing lie.
REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "a format character (bidi override, zero-width, ...)",
                      "Cs": "a surrogate", "Co": "a private-use character", "Cn": "an unassigned code point",
                      "Zl": "a line separator", "Zp": "a paragraph separator"}
PATH_SEPARATORS = "/\\"


def normalize_name(name: object) -> str:
    """Canonical object name: Unicode NFC, words lowercased, '_' as space, single spaces; what the registry stores
    and every lookup compares. Raises ValueError, with a one-line reason, on a name with no letters or digits, over
    MAX_NAME_CHARS, or holding a character of REFUSED_CATEGORIES or a path separator (/ or \\) anywhere but in
    leading or trailing whitespace, which is dropped. Other punctuation ("drop table objects;") is plain text and
    kept: a name is never part of a path (file names use `model_dir.file_slug`) nor of a query language."""
    if not isinstance(name, str):
        raise ValueError(f"an object name must be a string, got {type(name).__name__} {_shown(name)}")
    if len(name) > 4 * MAX_NAME_CHARS:  # refused before looking at every character of a huge string
        raise ValueError(f"object name is {len(name)} characters long; at most {MAX_NAME_CHARS} are allowed")
    text = unicodedata.normalize("NFC", name.strip())
    for i, ch in enumerate(text):
        what = REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if what is not None:
            raise ValueError(f"object name {_shown(name)} holds {what}, U+{ord(ch):04X} at position {i}: names are "
                             "visible text only")
        if ch in PATH_SEPARATORS:
            raise ValueError(f"object name {_shown(name)} holds the path separator {ch!r}: names are not paths")
    clean = " ".join(text.replace("_", " ").split()).lower()
    if not clean:
        raise ValueError(f"object name {_shown(name)} is empty")
    if not any(ch.isalnum() for ch in clean):
        raise ValueError(f"object name {_shown(name)} has no letters or digits")
    if len(clean) > MAX_NAME_CHARS:
        raise ValueError(f"object name is {len(clean)} characters long; at most {MAX_NAME_CHARS} are allowed")
    return clean


def normalize_description(text: object) -> str:
    """A description as the registry stores it: single spaces, case kept; "" for none. Raises ValueError, with a
    one-line reason, on a non-string, over MAX_DESCRIPTION_CHARS, or holding a character of REFUSED_CATEGORIES
    (tabs and line breaks become spaces first: a description is one line of prompt text)."""
    if not isinstance(text, str):
        raise ValueError(f"a description must be a string, got {type(text).__name__} {_shown(text)}")
    if len(text) > 4 * MAX_DESCRIPTION_CHARS:
        raise ValueError(f"description is {len(text)} characters long; at most {MAX_DESCRIPTION_CHARS} are allowed")
    clean = " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    clean = unicodedata.normalize("NFC", clean)
    for i, ch in enumerate(clean):
        what = REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if what is not None:
            raise ValueError(f"description {_shown(text)} holds {what}, U+{ord(ch):04X} at position {i}: "
                             "descriptions are visible text only")
    if len(clean) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"description is {len(clean)} characters long; at most {MAX_DESCRIPTION_CHARS} are allowed")
    return clean


def _shown(value: object, limit: int = 60) -> str:
    """repr of a (possibly hostile) value for a one-line message: escapes, at most `limit` characters of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class ObjectEntry:
    """One known object: trained on (`train`) or added later (`added`), with its shots file once learnt from shots
    and its own decision threshold (None: the model's calibrated threshold). An object learnt as a query vector
    (`vlkd_runtime.query_fit`) has `query`: the relative path of the safetensors file holding that vector (key
    "query"), and is scored sigmoid(query_scale * raw + query_bias); `finetuned`: the weights were finetuned on
    its shots (offline, `vlkd finetune-grasp`)."""

    name: str
    description: str = ""
    source: Literal["train", "added"] = "train"
    shots: str | None = None
    n_shots: int = 0
    finetuned: bool = False
    threshold: float | None = None
    query: str | None = None
    query_scale: float = 1.0
    query_bias: float = 0.0


@dataclass(frozen=True)
class ObjectRegistry:
    """Objects in insertion order, the current weights (relative path, version counter, content hash) and a revision
    counter that every commit without new weights advances."""

    objects: tuple[ObjectEntry, ...] = ()
    weights: str = WEIGHTS_FILE
    weights_version: int = 0
    weights_sha256: str = ""
    revision: int = 0
    format: str = FORMAT
    version: int = VERSION

    def names(self) -> list[str]:
        """Object names in registry order."""
        return [o.name for o in self.objects]

    def get(self, name: str) -> ObjectEntry | None:
        """The entry for `name` (any spelling that normalises to it), or None."""
        key = normalize_name(name)
        return next((o for o in self.objects if o.name == key), None)

    def with_object(self, entry: ObjectEntry) -> "ObjectRegistry":
        """A copy with `entry` added, or replacing the entry of the same name in place (no duplicates)."""
        entry = replace(entry, name=normalize_name(entry.name))
        objects = list(self.objects)
        for i, old in enumerate(objects):
            if old.name == entry.name:
                objects[i] = entry
                return replace(self, objects=tuple(objects))
        return replace(self, objects=tuple(objects + [entry]))

    def with_weights(self, path: str, sha256: str) -> "ObjectRegistry":
        """A copy pointing at new weights, with the version counter advanced."""
        return replace(self, weights=path, weights_sha256=sha256, weights_version=self.weights_version + 1)

    def revised(self) -> "ObjectRegistry":
        """A copy with the revision counter advanced: what is served changed, the weights did not."""
        return replace(self, revision=self.revision + 1)

    @property
    def model_version(self) -> str:
        """'v<counter>-<first 8 hex of the weights hash>', then '.r<revision>' once objects were learnt as query
        vectors: changes whenever what is served changes."""
        base = f"v{self.weights_version}-{self.weights_sha256[:8]}"
        return f"{base}.r{self.revision}" if self.revision else base


def read_registry(model_dir: str | os.PathLike) -> ObjectRegistry:
    """Read and check `model_dir/registry.json`."""
    path = Path(model_dir) / REGISTRY_FILE
    if not path.is_file():
        raise RegistryError(f"{path} not found: {model_dir} is not a grasp model dir "
                            "(train one with `vlkd train-grasp`)")
    try:
        raw = json.loads(path.read_text())
        objects = tuple(ObjectEntry(**o) for o in raw.pop("objects"))
        registry = ObjectRegistry(objects=objects, **raw)
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise RegistryError(f"{path} is not a valid object registry: {err}") from err
    if registry.format != FORMAT or registry.version != VERSION:
        raise RegistryError(f"{path}: format {registry.format!r} v{registry.version} is not {FORMAT!r} v{VERSION}")
    names = registry.names()
    if len(set(names)) != len(names):
        raise RegistryError(f"{path} lists an object twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return registry


def write_registry(model_dir: str | os.PathLike, registry: ObjectRegistry) -> Path:
    """Replace `model_dir/registry.json` atomically."""
    raw = asdict(registry)
    raw["objects"] = [asdict(o) for o in registry.objects]
    return atomic_write_json(Path(model_dir) / REGISTRY_FILE, raw)
