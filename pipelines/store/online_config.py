"""Where online features live: the setting alone, without Feast, so that what only passes it on
(the stream job's functions, configs) imports in milliseconds."""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipelines.config import typed


@typed
@dataclass(frozen=True)
class OnlineStore:
    """Where online features live: SQLite in the run folder (default) or Redis."""

    kind: str = "sqlite"
    redis_url: str | None = None  # host:port[,db=N]; defaults to $RECSTREAM_REDIS_URL

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "redis"):
            raise ValueError(f"online store kind must be 'sqlite' or 'redis', got {self.kind!r}")
        if self.kind == "redis" and not (self.redis_url or os.environ.get("RECSTREAM_REDIS_URL")):
            raise ValueError("online store 'redis' needs redis_url or $RECSTREAM_REDIS_URL (host:port)")

    def connection_string(self) -> str | None:
        """Redis: the address and its options (None for SQLite)."""
        return (self.redis_url or os.environ["RECSTREAM_REDIS_URL"]) if self.kind == "redis" else None
