"""A throwaway redis-server for tests and benchmarks: 127.0.0.1, a free port, no persistence.

    with running_redis() as server:
        OnlineStore(kind="redis", redis_url=server.address)
        server.stop(); server.start()      # an outage and a restart on the same port

The process is started with Popen (so the PID held is redis's own, not a shell's), waited
for until it answers PING, and stopped by that PID (SIGTERM, then SIGKILL after a grace
period) and reaped. Nothing is written to disk (--save '' --appendonly no; --dir is a temporary
folder in case redis wants one anyway), unless persist=True: then an fsynced append-only file
in that folder survives a stop and start.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from features.errors import MissingInput
from pipelines.processes import start_on_free_port, stop_process

DEFAULT_BINARY = "/usr/bin/redis-server"


def redis_server_binary() -> str | None:
    """The redis-server to run: $RECSTREAM_REDIS_SERVER, /usr/bin/redis-server, or one on PATH."""
    for candidate in (os.environ.get("RECSTREAM_REDIS_SERVER"), DEFAULT_BINARY, shutil.which("redis-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class RedisServer:
    """One redis-server process at a time on a fixed port; start() again after stop() restarts it."""

    def __init__(self, port: int | None = None, binary: str | None = None, startup_timeout_s: float = 10.0,
                 persist: bool = False):
        # persist: an append-only file fsynced on every write, so a restart keeps the data (as a
        # production Redis would); off by default (nothing on disk).
        self.persist = persist
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise MissingInput(DEFAULT_BINARY, "redis-server is not installed (nor on PATH); "
                               "install it with `apt-get install -y redis-server`")
        self.port = port
        self.host = "127.0.0.1"
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the last started process's PID, kept after stop() for checks
        self._dir = tempfile.mkdtemp(prefix="recstream-redis-")
        self._log = Path(self._dir) / "redis.log"

    @property
    def address(self) -> str:
        """host:port, the form OnlineStore(redis_url=...) and $RECSTREAM_REDIS_URL take."""
        return f"{self.host}:{self.port}"

    def start(self) -> "RedisServer":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server already running (pid {self.proc.pid})")
        self.proc, self.port = start_on_free_port(self._launch, self._answers_ping, "redis-server", self.port,
                                                  timeout_s=self.startup_timeout_s, log_tail=self._log_tail)
        self.pid = self.proc.pid
        return self

    def _launch(self, port: int) -> subprocess.Popen:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args = [self.binary, "--port", str(port), "--bind", self.host, "--save", "", *durability,
                "--dir", self._dir, "--daemonize", "no", "--logfile", str(self._log)]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _answers_ping(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the process by its PID and reap it (SIGTERM; SIGKILL if it is still there after grace_s)."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-1500:] or "(empty log)"
        except OSError:
            return "(no log)"

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def running_redis(port: int | None = None) -> Iterator[RedisServer]:
    """A started RedisServer (a free port unless given); stopped by PID and reaped on exit."""
    server = RedisServer(port=port)
    server.start()
    try:
        yield server
    finally:
        server.close()

