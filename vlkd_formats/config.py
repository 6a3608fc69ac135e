"""Typed job configs: dataclasses loaded from YAML, with dotted command-line overrides and validation.

`load_config` is the one loader of every job config (distill, pretrain-teacher, train/eval-grasp, collect,
sim-camera, demo): defaults of the dataclass (or a `base` config), then a YAML file, then `key.sub=value` overrides.
A config path that does not exist relative to the working directory is looked up in the `configs/` folder shipped
inside the package that defines the config class (`training/configs/` for the training jobs), so
`configs/grasp_offline.yaml`, `grasp_offline.yaml` and `grasp_offline` all name the shipped file from any directory.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vlkd_formats.errors import VlkdError

T = TypeVar("T")
PACKAGED_CONFIGS = "configs"  # folder name of the shipped job configs inside a package (package data)


class ConfigError(VlkdError, ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: T | None = None) -> T:
    """Build `cls` from its defaults (or from the config `base`), then a YAML file, then `key.sub=value`
    overrides; validate it."""
    raw = to_dict(base) if base is not None else {}
    if path is not None:
        merge_trees(raw, read_yaml_tree(path, cls))
    apply_overrides(raw, overrides or [])
    config = from_dict(cls, raw)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def packaged_config_dir(cls: type) -> Path | None:
    """The shipped `configs/` folder of the package that defines config class `cls` (None if it has none)."""
    package = sys.modules.get(cls.__module__.partition(".")[0])
    where = getattr(package, "__file__", None)
    folder = Path(where).parent / PACKAGED_CONFIGS if where else None
    return folder if folder is not None and folder.is_dir() else None


def resolve_config_path(path: str | os.PathLike, cls: type | None = None) -> Path:
    """`path` itself if it exists; else, for a bare name (`x`, `x.yaml`) or a `configs/...` path, the shipped config
    of that name in `cls`'s package. Raises ConfigError naming both places when neither exists."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = packaged_config_dir(cls) if cls is not None else None
    parts = path.parts[1:] if len(path.parts) > 1 and path.parts[0] == PACKAGED_CONFIGS else path.parts
    if shipped is not None and not path.is_absolute() and len(parts) == 1:
        name = parts[0]
        for candidate in (shipped / name, shipped / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"config file {path} does not exist (here or among the shipped configs in {shipped}: "
                          f"{', '.join(sorted(p.name for p in shipped.glob('*.yaml')))})")
    raise ConfigError(f"config file {path} does not exist")


def read_yaml_tree(path: str | os.PathLike, cls: type | None = None) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (a missing path resolves as in `resolve_config_path`)."""
    path = resolve_config_path(path, cls)
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a raw config tree, in place."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(value))
    return tree


def merge_trees(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `extra` into `base` (in place); `extra` wins."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge_trees(base[k], v)
        else:
            base[k] = v
    return base


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Recursively build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or cls.__name__}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for YAML/JSON dumps and cache keys)."""
    return dataclasses.asdict(config)


def dump_config(config: Any) -> str:
    """YAML text of a config dataclass."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} fits none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value
