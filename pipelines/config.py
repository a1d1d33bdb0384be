"""Typed configuration: frozen dataclasses loaded from TOML or dicts, unknown keys rejected."""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key that is wrong, named with its dotted path."""


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclasses recurse; typos are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a table of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path or cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint, where = hints[name], f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, where)
        elif typing.get_origin(hint) is frozenset:
            kwargs[name] = frozenset(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or cls.__name__}: {err}") from None


def load_toml(cls: type[T], file: Path) -> T:
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config {file}: {err}") from None
    return from_dict(cls, data)


def to_dict(obj: Any) -> Any:
    """A JSON-able view of a config (frozensets become sorted lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return obj
