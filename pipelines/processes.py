"""Child processes the project starts and must stop: one way to pick a port, start, wait, stop.

    proc, port = start_on_free_port(lambda port: subprocess.Popen([...str(port)...]),
                                    ready=port_answers, what="Tansu")
    stop_process(proc)                       # SIGTERM by PID, SIGKILL after the grace period, reaped

A port the OS picked can be taken by someone else before the child binds it, so a start that
fails on a picked port is retried on another. Every process is started with Popen on the
binary itself (not through a shell), so the PID held is the server's own.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable

from features.errors import ServiceError

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether this process could bind the port on 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = HOST, timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (a reaped child no longer does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def start_on_free_port(launch: Callable[[int], subprocess.Popen], ready: Callable[[int], bool], what: str,
                       port: int | None = None, tries: int = 5, timeout_s: float = 10.0,
                       log_tail: Callable[[], str] = lambda: "") -> tuple[subprocess.Popen, int]:
    """Start a server with ``launch(port)`` and wait until ``ready(port)``; returns (process, port).

    With ``port`` None a free port is picked, and a start that fails (the port was taken in
    between, the child exited) is retried on another, up to ``tries`` times. A given port is
    tried once. Raises ServiceError with the log tail when no start succeeded."""
    for _ in range(1 if port is not None else tries):
        chosen = port if port is not None else free_port()
        if port_answers(chosen):  # something else already listens there
            continue
        proc = launch(chosen)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if ready(chosen):
                return proc, chosen
            time.sleep(0.02)
        stop_process(proc)
    raise ServiceError(what, f"{HOST}:{port if port is not None else 'a free port'}",
                       f"did not start within {timeout_s:.0f} s", f"its log ends: {log_tail()[-1500:] or '(empty)'}")


def stop_process(proc: subprocess.Popen | None, grace_s: float = 5.0, group: bool = False) -> None:
    """Stop a child by its PID and reap it: SIGTERM, then SIGKILL after ``grace_s``. ``group``:
    also SIGKILL whatever is left of its process group (a child started with
    start_new_session=True, whose own children must not outlive it)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=grace_s)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send sig to this process when its parent dies (Linux; elsewhere nothing).

    Linux counts the *thread* that started this process as the parent: start it from a thread
    that lives as long as it should (the main thread). Usable as a Popen preexec_fn."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request: nobody would send it
        os.kill(os.getpid(), sig)
