"""Command-line flags of config fields: the one place where `--image-size` meets `image_size`.

`add_config_flags(parser, cls, fields)` adds one flag per dataclass field (`image_size` -> `--image-size`), its type,
choices and `nargs` from the field's annotation, its help from the field's `metadata["help"]` (or `help=`) plus the
field's default. An omitted flag stays None and sets nothing, so the dataclass default, or the `--config` YAML,
stands. `flag_overrides(args, cls)` turns the given flags into `key=value` overrides for
`vlkd_formats.config.load_config`, the one config loader:

    add_config_flags(parser, ClutterConfig, ("episodes", "image_size"))
    ...
    config = load_config(ClutterConfig, args.config, flag_overrides(args, ClutterConfig))
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable

import yaml

REGISTRY = "_vlkd_config_flags"  # namespace attribute: {config class: [(dest, dotted key), ...]}


def flag_name(field: str) -> str:
    """`image_size` -> `--image-size`."""
    return "--" + field.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                     fields: Iterable[str] | None = None, *, prefix: str = "", help: dict[str, str] | None = None,
                     choices: dict[str, Iterable[Any]] | None = None, defaults: dict[str, Any] | None = None,
                     registry: argparse.ArgumentParser | None = None) -> None:
    """Add a flag for each of `fields` of dataclass `cls` (default: every field a flag can hold).

    `prefix` is prepended to the override key (`optim.` for a nested section); `help`, `choices` and `defaults`
    (shown in the help only; the value comes from the config) override what the dataclass says, per field.
    `registry` is the parser that parses the flags (needed only when `parser` is an argument group).
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields) if fields is not None else [n for n in by_name if _flag_spec(hints[n]) is not None]
    help, choices, defaults = help or {}, choices or {}, defaults or {}
    entries = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"{cls.__name__} has no field {name!r} for a flag")
        spec = _flag_spec(hints[name])
        if spec is None:
            raise ValueError(f"{cls.__name__}.{name} ({hints[name]}) cannot be a command-line flag")
        kind, nargs, literal = spec
        text = help.get(name, by_name[name].metadata.get("help", ""))
        default = defaults.get(name, _default(by_name[name]))
        if default not in (None, "", [], ()):
            text = f"{text} (default {_show(default)})" if text else f"default {_show(default)}"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": text or None}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if nargs:
                kwargs["nargs"] = nargs
            if name in choices or literal:
                kwargs["choices"] = tuple(choices.get(name, literal))
        parser.add_argument(flag_name(name), **kwargs)
        entries.append((name, prefix + name))
    target = registry or parser
    registered = dict(target.get_default(REGISTRY) or {})
    registered[cls] = [*registered.get(cls, []), *entries]
    target.set_defaults(**{REGISTRY: registered})


def flag_overrides(args: argparse.Namespace, cls: type | None = None) -> list[str]:
    """`key=value` overrides (values as YAML) of the config flags given on the command line, for `cls`
    (default: every config class with flags on this parser)."""
    registered: dict[type, list[tuple[str, str]]] = getattr(args, REGISTRY, None) or {}
    entries = registered.get(cls, []) if cls is not None else [e for es in registered.values() for e in es]
    return [f"{key}={yaml_value(getattr(args, dest))}" for dest, key in entries if getattr(args, dest) is not None]


def yaml_value(value: Any) -> str:
    """`value` as a one-line YAML scalar or flow list that reads back as the same value ("" stays "")."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n...\n").rstrip("\n")


def _flag_spec(hint: Any) -> tuple[type, int | str | None, tuple] | None:
    """(argparse type, nargs, Literal choices) of a field annotation; None when no flag can hold it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if str in options:  # e.g. `list[str] | str | None`: the flag gives the string form
            return str, None, ()
        return _flag_spec(options[0]) if len(options) == 1 else None
    if origin is typing.Literal:
        return type(args[0]), None, tuple(args)
    if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]: exactly that many values
        item = _flag_spec(args[0])
        return (item[0], len(args), ()) if item and not item[1] and len(set(args)) == 1 else None
    if origin in (list, tuple):
        item = _flag_spec(args[0]) if args else (str, None, ())
        return (item[0], "+", item[2]) if item and not item[1] else None
    if hint in (int, float, str, bool):
        return hint, None, ()
    return None


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
