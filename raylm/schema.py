"""Plain data (parsed YAML) into frozen dataclasses, every key and type checked by its dotted path.

The engine under `raylm.config`: `from_dict` builds a dataclass and names an unknown
key or a wrong type by its path (`data.crop.margin`); `read_file` reads a YAML file
and the chain of files it `extends:`; `apply_override` sets one `--set key=value`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from raylm.errors import RaylmError

T = TypeVar("T")
EXTENDS = "extends"  # the key naming the file a config file starts from


class ConfigError(RaylmError, ValueError):
    """A study file or override that does not fit the config's schema."""


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from plain data (e.g. parsed YAML), checking every key and type."""
    where = path or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{_join(path, str(key))}: unknown key; the keys allowed at {where} are: {known}")
    values = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        message = str(error)
        # A check that names its own dotted field ("search.metric ...") needs no "search: " before it.
        named = not path or message.startswith(f"{path}.")
        raise ConfigError(message if named else f"{path}: {message}") from None


def to_dict(config: Any) -> dict:
    """A config as plain data (nested dicts), as `from_dict` reads it back."""
    return dataclasses.asdict(config)


def read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The mapping in YAML file `path`, its `extends: base.yaml` (relative to `path`) resolved:
    the file's keys deep-merged over the base's, so a file states only what differs.

    `chain` holds the files that extend this one, to name a cycle instead of recursing forever.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in (link.resolve() for link in chain):
        raise ConfigError(f"{path}: extends itself ({' -> '.join(map(str, (*chain, path)))}); remove one extends:")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    base = data.pop(EXTENDS, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name relative to {path.parent}, got {base!r}")
    return merged(read_file(path.parent / base, (*chain, path)), data)


def merged(base: dict, over: dict) -> dict:
    """`base` with `over`'s keys set on it, mappings merged key by key, any other value (a list, null) replaced."""
    result = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both else value
    return result


def apply_override(data: dict, override: str) -> None:
    """Set one `--set key=value` on parsed config data (the key a dotted path, the value read as YAML)."""
    key, value = parse_override(override)
    set_key(data, key, value, f"--set {override!r}")


def parse_override(override: str) -> tuple[str, Any]:
    """`key=value` as (dotted key, value read as YAML, or the text itself when it is not YAML)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. --set data.train_size=500")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError:
        return key, text


def set_key(data: dict, key: str, value: Any, source: str) -> None:
    """Set dotted `key` in nested `data`, making the sections it names; `source` names the setting in an error."""
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(kind: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_convert(args[0], k, path): _convert(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is tuple:
            return tuple(items)
        return items
    if kind is Any:
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        # PyYAML reads `3e-4` (no dot) as a string; accept what Python reads as a number.
        try:
            return float(value)
        except ValueError:
            pass
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
