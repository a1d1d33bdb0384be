"""An online store that is down or hung ends a command in bounded time with one line.

Redis connections get connect and read timeouts unless the address sets its own (redis-py
waits without limit otherwise: a frozen server blocked `recstream online` for minutes), and
a connection or timeout error becomes a ServiceError that names the address (never the
password) and the fix.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from features.errors import ServiceError

TIMEOUTS = {"socket_connect_timeout": "5", "socket_timeout": "10"}


def with_timeouts(connection_string: str) -> str:
    """Feast's Redis connection string (host:port[,key=value...]) with TIMEOUTS where it sets none."""
    given = {part.split("=", 1)[0].strip() for part in connection_string.split(",")[1:]}
    return ",".join([connection_string, *(f"{k}={v}" for k, v in TIMEOUTS.items() if k not in given)])


def redis_address(connection_string: str) -> str:
    return connection_string.split(",", 1)[0]


@contextmanager
def online_errors(connection_string: str | None) -> Iterator[None]:
    """Redis errors inside the block as one ServiceError (None: SQLite, nothing to translate)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - only Redis outages are translated; the rest is raised as is
        import redis

        if connection_string is None or not isinstance(err, (redis.exceptions.ConnectionError,
                                                              redis.exceptions.TimeoutError)):
            raise
        raise ServiceError("Redis", redis_address(connection_string), f"{type(err).__name__}: {err}",
                           "check that it runs and answers, and --redis-url / $RECSTREAM_REDIS_URL") from None
