"""The object categories sim/ renders: procedural parts or mesh files, their looks, and ordered object sets.

Plain frozen dataclasses with no loading logic, shared by `catalog` (reads object-set YAML), `ycb` (ManiSkill's
YCB models), `geometry` (sizes and resting poses) and the env builders.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlkd_formats.dataset_dir import label_slug


@dataclass(frozen=True)
class Look:
    """Surface appearance of a part or mesh: RGBA colour, roughness, metallic, emission strength."""

    color: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    roughness: float = 0.6
    metallic: float = 0.0
    emission: float = 0.0


@dataclass(frozen=True)
class Part:
    """One primitive of a procedural object; `dims` is (hx, hy, hz) for a box, (r,) for a sphere, (r, half_length)
    for a z-axis cylinder or capsule."""

    shape: str
    dims: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    look: Look = Look()


@dataclass(frozen=True)
class MeshRef:
    """A mesh-file object: visual file, optional collision file, which axis is up and an optional material override."""

    visual: Path
    collision: Path | None = None
    convex_parts: bool = False
    up: str = "+z"
    look: Look | None = None


@dataclass(frozen=True)
class ObjectSpec:
    """A named object category: how to build it (procedural parts or a mesh), its largest extent `size` in metres,
    and where it came from."""

    name: str
    description: str
    set_name: str
    size: float
    parts: tuple[Part, ...] = ()
    mesh: MeshRef | None = None
    asset_id: str | None = None
    source: str = "procedural"
    license: str = "project licence (procedural geometry)"

    @property
    def slug(self) -> str:
        """The folder-safe form of the name."""
        return label_slug(self.name)

    @property
    def model_id(self) -> str:
        """The id clutter episode files use for this object (the asset's own id, else the slug)."""
        return self.asset_id or self.slug

    @property
    def object_id(self) -> str:
        """`<set>/<slug>`: unique across object sets."""
        return f"{self.set_name}/{self.slug}"


@dataclass(frozen=True)
class ObjectSet:
    """An ordered collection of object categories with provenance."""

    name: str
    description: str
    objects: tuple[ObjectSpec, ...]
    sources: tuple[dict[str, Any], ...] = field(default=())

    @property
    def names(self) -> list[str]:
        """Category names in set order."""
        return [o.name for o in self.objects]

    def get(self, name: str) -> ObjectSpec:
        """The category called `name`; ValueError listing the valid names otherwise."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise ValueError(f"unknown object {name!r} in object set {self.name!r}; valid names: {', '.join(self.names)}")

    def by_model_id(self, model_id: str) -> ObjectSpec:
        """The category whose `model_id` is `model_id`."""
        for obj in self.objects:
            if obj.model_id == model_id:
                return obj
        raise ValueError(f"no object with model id {model_id!r} in object set {self.name!r}")

    def select(self, names: Iterable[str] | None) -> ObjectSet:
        """A set restricted to `names` (in the given order); all objects when `names` is None."""
        if names is None:
            return self
        chosen = tuple(self.get(n) for n in names)
        if len({o.name for o in chosen}) != len(chosen):
            raise ValueError(f"object names repeat in {list(names)}")
        return ObjectSet(self.name, self.description, chosen, self.sources)
