"""Servers a command starts and leaves running (`recstream broker start`, `recstream cluster
start`), found again by a later command through a state file in their folder.

    save(folder, Daemon("broker", {"tansu": pid}, "127.0.0.1:9092", log, marker="tansu"))
    d = load(folder)            # None where nothing was started there
    running(d)                  # its processes still live (and are still what was started)
    stop(d); forget(folder)     # SIGTERM by PID, SIGKILL to each process group after a grace period

The processes run in their own sessions, so closing the terminal that started them does not end
them. A PID is only signalled while its command line still holds ``marker``: a PID reused by
another program after a crash is left alone.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from features.errors import ConfigError

STATE = "state.json"


@dataclass
class Daemon:
    name: str  # "broker" | "cluster"
    pids: dict[str, int]  # role -> PID (each its own process group)
    address: str
    log: str  # where its output goes
    marker: str  # what each PID's command line holds
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def save(folder: Path, daemon: Daemon) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE}.tmp"
    tmp.write_text(json.dumps(asdict(daemon), indent=2) + "\n")
    tmp.replace(folder / STATE)


def load(folder: Path) -> Daemon | None:
    path = Path(folder) / STATE
    return Daemon(**json.loads(path.read_text())) if path.is_file() else None


def forget(folder: Path) -> None:
    (Path(folder) / STATE).unlink(missing_ok=True)


def _ours(pid: int, marker: str) -> bool:
    """The PID lives (not a zombie) and is still the program that was started."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def running(daemon: Daemon) -> dict[str, bool]:
    return {role: _ours(pid, daemon.marker) for role, pid in daemon.pids.items()}


def stop(daemon: Daemon, grace_s: float = 30.0) -> None:
    """SIGTERM to each live process, wait up to grace_s, then SIGKILL to each one's process group."""
    live = [pid for pid in daemon.pids.values() if _ours(pid, daemon.marker)]
    for pid in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended meanwhile
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_ours(pid, daemon.marker) for pid in live):
        time.sleep(0.1)
    for pid in live:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def command(folder: Path, name: str, action: str, start: Callable[[Path], Daemon],
            show: Callable[[Daemon], None], grace_s: float) -> int:
    """start | stop | status | address of the ``name`` server whose state lives in folder: start
    (start(folder) -> Daemon) unless it is up, stop it by PID, show(state) while it is up, or print
    its address alone. Returns the command's exit code."""
    state = load(folder)
    live = state is not None and all(running(state).values())
    if action == "start":
        if live:
            print(f"{name} already up at {state.address} (since {state.started})")
            return 0
        if state is not None:
            stop(state, grace_s)  # what is left of a half-dead one, so that nothing runs unrecorded
        save(folder, start(folder))
        return 0
    if state is None:
        print(f"no {name} was started from {folder}", file=sys.stderr if action == "address" else sys.stdout)
        return 0 if action == "stop" else 1
    if action == "address":
        print(state.address)
        return 0 if live else 1
    if action == "stop":
        any_left = any(running(state).values())
        stop(state, grace_s)
        forget(folder)
        print(f"{name} at {state.address} stopped" if any_left else f"{name} at {state.address} was not running")
        return 0
    if not live:
        print(f"{name} at {state.address} is not (wholly) running: {running(state)}; logs {state.log}")
        return 1
    show(state)
    return 0


def address(given: str | None, folder: Path, flag: str, hint: str) -> str:
    """The address a flag gives, else the one of the server started from folder."""
    if given:
        return given
    state = load(Path(folder))
    if state is None:
        raise ConfigError(flag, hint)
    if not all(running(state).values()):
        raise ConfigError(flag, f"the {state.name} started from {folder} at {state.address} is not running any more "
                                f"(logs {state.log}); {hint}")
    return state.address
