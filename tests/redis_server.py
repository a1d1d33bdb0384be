"""A throwaway redis-server for tests and benchmarks: 127.0.0.1, a free port, no persistence.

    with running_redis() as server:        # or the pytest fixture below
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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEFAULT_BINARY = "/usr/bin/redis-server"


def redis_server_binary() -> str | None:
    """The redis-server to run: $RECSTREAM_REDIS_SERVER, /usr/bin/redis-server, or one on PATH."""
    for candidate in (os.environ.get("RECSTREAM_REDIS_SERVER"), DEFAULT_BINARY, shutil.which("redis-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (a reaped child no longer does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (the PID was reused)
        return True
    return True


class RedisServer:
    """One redis-server process at a time on a fixed port; start() again after stop() restarts it."""

    def __init__(self, port: int | None = None, binary: str | None = None, startup_timeout_s: float = 10.0,
                 persist: bool = False):
        # persist: an append-only file fsynced on every write, so a restart keeps the data (as a
        # production Redis would); off by default (nothing on disk).
        self.persist = persist
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise FileNotFoundError(f"redis-server not found ({DEFAULT_BINARY} is absent and none is on PATH); "
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
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):  # a picked port can be taken in between: pick another
            port = self.port if fixed else free_port()
            if self._launch(port):
                self.port = port
                return self
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}: {self._log_tail()}")

    def _launch(self, port: int) -> bool:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args = [self.binary, "--port", str(port), "--bind", self.host, "--save", "", *durability,
                "--dir", self._dir, "--daemonize", "no", "--logfile", str(self._log)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited: port taken, bad argument...
                self.proc = None
                return False
            if self._answers_ping(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

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
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)

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


def redis_server_or_skip() -> str:
    """The binary, or skip the calling test with the reason (for pytest fixtures)."""
    import pytest

    binary = redis_server_binary()
    if binary is None:
        pytest.skip(f"redis-server is not installed ({DEFAULT_BINARY} is absent): apt-get install -y redis-server")
    return binary
