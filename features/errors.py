"""The one exception hierarchy: every error a user can fix is a RecstreamError.

Each subclass builds its own message from what went wrong, so ``str(err)`` is one line
that names the bad input and the fix. ``recstream`` prints that line and exits non-zero;
any other exception is a bug and keeps its traceback. It lives here, at the bottom of the
import graph, so that features/, trainers/ and pipelines/ can all raise it.

    RecstreamError
      ConfigError         a setting: its dotted key, the problem, the valid choices
      InputError          a file, folder or table that is missing or malformed
      ServiceError        a server (Kafka, Redis, Flink) that cannot be reached or failed
      StateError          stored state (checkpoints, registry, outputs) missing or corrupt
"""
from __future__ import annotations

from typing import Iterable


class RecstreamError(Exception):
    """An error the user can fix; the message is one line naming the input and the fix."""


class ConfigError(RecstreamError, ValueError):
    """A configuration key or value that is wrong.

    Example:
        >>> str(ConfigError("train.steps", "must be >= 1, got 0"))
        'train.steps: must be >= 1, got 0'
        >>> str(ConfigError("--users must be >= 1"))   # a message that names its key itself
        '--users must be >= 1'
    """

    def __init__(self, key: str, problem: str | None = None, valid: Iterable | None = None):
        if problem is None:
            key, problem = "", key
        self.key, self.problem = key, problem
        hint = f"; valid: {', '.join(map(str, valid))}" if valid is not None else ""
        super().__init__(f"{key}: {problem}{hint}" if key else f"{problem}{hint}")


class InputError(RecstreamError, ValueError):
    """An input (file, folder, table) that is missing or malformed."""

    def __init__(self, what: str, problem: str | None = None, fix: str = ""):
        self.what = what
        message = what if problem is None else f"{what}: {problem}"
        super().__init__(message + (f"; {fix}" if fix else ""))


class MissingInput(InputError, FileNotFoundError):
    """A file or folder that should exist and does not; ``fix`` says what makes it."""

    def __init__(self, path, fix: str = ""):
        super().__init__(str(path), "is missing", fix)


class ServiceError(RecstreamError, RuntimeError):
    """A server that cannot be reached or answered with an error."""

    def __init__(self, service: str, address: str, problem: str, fix: str = ""):
        self.service, self.address = service, address
        super().__init__(f"{service} at {address}: {problem}" + (f"; {fix}" if fix else ""))


class StateError(RecstreamError, RuntimeError):
    """Stored state (a checkpoint, a registry entry, a job's outputs) missing, corrupt or mismatched."""
