"""An online store that is down or hung ends a command in bounded time with one line.

Redis connections get connect and read timeouts unless the address sets its own (redis-py
waits without limit otherwise: a frozen server blocked `recstream online` for minutes), and
a connection or timeout error becomes a ServiceError that names the address (never the
password) and the fix. A read (``retried``) is tried again while the server refuses
connections (a restart), up to $RECSTREAM_REDIS_RETRY_S seconds; a hung server is not
retried (each try would wait out the read timeout again).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from features.errors import ServiceError

TIMEOUTS = {"socket_connect_timeout": "5", "socket_timeout": "10"}
RETRY_ENV, RETRY_S = "RECSTREAM_REDIS_RETRY_S", 5.0
T = TypeVar("T")


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


def retried(call: Callable[[], T], connection_string: str | None, what: str = "recstream") -> T:
    """call(), tried again (0.5 s, 1 s, 2 s ... apart) while Redis refuses connections, for up to
    $RECSTREAM_REDIS_RETRY_S seconds (default 5); each retry is said on stderr. SQLite: once."""
    if connection_string is None:
        return call()
    import redis

    budget = float(os.environ.get(RETRY_ENV, RETRY_S))
    started, pause, said = time.monotonic(), 0.5, False
    while True:
        try:
            return call()
        except redis.exceptions.TimeoutError:
            raise
        except redis.exceptions.ConnectionError as err:
            left = budget - (time.monotonic() - started)
            if left <= 0:
                raise
            if not said:
                print(f"{what}: Redis at {redis_address(connection_string)} refused ({err}); retrying for up "
                      f"to {budget:g} s", file=sys.stderr, flush=True)
                said = True
            time.sleep(min(pause, left))
            pause *= 2
