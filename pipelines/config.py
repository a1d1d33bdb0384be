"""Typed configuration: frozen dataclasses whose fields are type-checked, loaded from TOML or dicts.

Every value is checked against its field's type hint with pydantic in strict mode (an ``int``
field refuses ``2.5``, ``"ten"`` and ``true``; a ``Literal`` field names its choices), nested
dataclasses load from tables, unknown keys are errors, and every error is a ConfigError that
names the dotted key. Configs decorated with ``@typed`` get the same checks when code builds
them directly, so their ``__post_init__`` keeps only ranges and rules between fields.

    @typed
    @dataclass(frozen=True)
    class JobConfig:
        workdir: Path                         # a str loads as a Path
        mode: Literal["once", "follow"] = "once"
        steps: int = 10

    load_toml(JobConfig, Path("job.toml"))   # ConfigError("mode: Input should be 'once' or 'follow'")
"""
from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from features.errors import ConfigError

T = TypeVar("T")

__all__ = ["ConfigError", "as_folder", "check_fields", "from_dict", "load_toml", "merged", "read_toml", "to_dict",
           "typed"]


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclasses recurse; typos are errors."""
    if not isinstance(data, dict):
        raise ConfigError(path or cls.__name__, f"expected a table of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(path or cls.__name__, f"unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}" if path else name
        kwargs[name] = _load(hints[name], value, where)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if path and not err.key.startswith(path):
            raise ConfigError(f"{path}.{err.key}" if err.key else path, err.problem) from None
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(path or cls.__name__, str(err)) from None


def load_toml(cls: type[T], file: Path) -> T:
    """``cls`` from a TOML file; an unreadable file or a bad value is a ConfigError."""
    return from_dict(cls, read_toml(file))


def read_toml(file: Path) -> dict:
    """A TOML file's table; a folder, an unreadable file or bad TOML is a ConfigError."""
    file = Path(file)
    if file.is_dir():
        raise ConfigError(f"cannot read config {file}: it is a folder; give a TOML file")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config {file}: {err}") from None


def merged(base: dict, top: dict) -> dict:
    """``top`` laid over ``base``, table by table (a TOML file or flags over a config's defaults)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def as_folder(path: str | Path, key: str) -> Path:
    """``path`` as a folder to work in; a file there is a ConfigError naming ``key`` (a missing
    folder is fine: jobs create theirs)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, f"{path} is a file, not a folder; give a folder (it is created if missing)")
    if not path.exists():
        above = next(p for p in path.absolute().parents if p.exists())
        if not above.is_dir():
            raise ConfigError(key, f"{path} would be inside {above}, which is a file; give a folder")
        if not os.access(above, os.W_OK | os.X_OK):
            raise ConfigError(key, f"{path} cannot be created: {above} is not writable; give a folder you can write")
    return path


def to_dict(obj: Any) -> Any:
    """A JSON-able view of a config (frozensets become sorted lists, paths strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def typed(cls: type[T]) -> type[T]:
    """Class decorator: check every field's type (check_fields) before the class's own __post_init__,
    whose ValueErrors become ConfigErrors with the same message."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self) -> None:
        check_fields(self)
        if own is not None:
            try:
                own(self)
            except ConfigError:
                raise
            except ValueError as err:  # the class's own rule, worded by the class: one line for the CLI
                raise ConfigError(str(err)) from None

    cls.__post_init__ = __post_init__
    return cls


def check_fields(obj: Any) -> None:
    """Coerce what a file can only spell one way (str -> Path, list -> frozenset/tuple, table ->
    nested dataclass), then check each field's value against its type hint (strict)."""
    cls = type(obj)
    for name, hint in _hints(cls).items():
        value = getattr(obj, name)
        coerced = _coerce(hint, value, f"{cls.__name__}.{name}")
        if coerced is not value:
            object.__setattr__(obj, name, coerced)
        _check(hint, coerced, f"{cls.__name__}.{name}")


def _load(hint, value, where: str):
    cls = _dataclass_of(hint)
    if cls is not None and isinstance(value, dict):
        return from_dict(cls, value, where)
    value = _coerce(hint, value, where)
    _check(hint, value, where)
    return value


def _coerce(hint, value, where: str):
    if value is None:
        return value
    cls = _dataclass_of(hint)
    if cls is not None and isinstance(value, dict):
        return from_dict(cls, value, where)
    options = _options(hint)
    if Path in options and isinstance(value, str):
        if not value:
            raise ConfigError(where, "must be a non-empty path")
        return Path(value)
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is frozenset and isinstance(value, (list, tuple, set)):
            return frozenset(value)
        if origin is tuple and isinstance(value, list):
            return tuple(value)
    return value


def _check(hint, value, where: str) -> None:
    cls = _dataclass_of(hint)
    if cls is not None:
        if isinstance(value, cls) or (value is None and type(None) in _options(hint)):
            return
        raise ConfigError(where, f"expected a table of {cls.__name__} settings, got {value!r}")
    try:
        _adapter(hint).validate_python(value, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(where, f"{first['msg']}, got {value!r}") from None


def _options(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _dataclass_of(hint):
    for option in _options(hint):
        if isinstance(option, type) and dataclasses.is_dataclass(option):
            return option
    return None


@functools.cache
def _hints(cls) -> dict:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in init}


@functools.cache
def _adapter(hint) -> TypeAdapter:
    return TypeAdapter(hint, config={"arbitrary_types_allowed": True})
