"""The object registry of a grasp model dir (`registry.json`, version 1): which objects the model knows, their
descriptions and few-shot shots, and which weights file is current. Replacing this one file atomically is
the commit point of every change, so a crash leaves either the old or the new registry, never a mix.
The model dir's layout around it is in `vlkd_formats.model_dir`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError
from vlkd_formats.model_dir import REGISTRY_FILE, WEIGHTS_FILE

FORMAT = "vlkd-object-registry"
VERSION = 1
MAX_NAME_CHARS = 100


class RegistryError(VlkdError, ValueError):
    """The registry file is missing, unreadable or of another format."""


def normalize_name(name: object) -> str:
    """Canonical object name: words lowercased, '_' as space, single spaces. Raises ValueError on no text."""
    if not isinstance(name, str):
        raise ValueError(f"an object name must be a string, got {type(name).__name__} {name!r}")
    clean = " ".join(name.replace("_", " ").split()).lower()
    if not clean:
        raise ValueError(f"object name {name!r} is empty")
    if not any(ch.isalnum() for ch in clean):
        raise ValueError(f"object name {name!r} has no letters or digits")
    if len(clean) > MAX_NAME_CHARS:
        raise ValueError(f"object name is {len(clean)} characters long; at most {MAX_NAME_CHARS} are allowed")
    return clean


@dataclass(frozen=True)
class ObjectEntry:
    """One known object: trained on (`train`) or added later (`added`), with its shots file once finetuned and
    its own decision threshold calibrated after the finetune (None: the model's calibrated threshold)."""

    name: str
    description: str = ""
    source: Literal["train", "added"] = "train"
    shots: str | None = None
    n_shots: int = 0
    finetuned: bool = False
    threshold: float | None = None


@dataclass(frozen=True)
class ObjectRegistry:
    """Objects in insertion order and the current weights (relative path, version counter, content hash)."""

    objects: tuple[ObjectEntry, ...] = ()
    weights: str = WEIGHTS_FILE
    weights_version: int = 0
    weights_sha256: str = ""
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

    @property
    def model_version(self) -> str:
        """'v<counter>-<first 8 hex of the weights hash>': changes whenever the weights change."""
        return f"v{self.weights_version}-{self.weights_sha256[:8]}"


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
