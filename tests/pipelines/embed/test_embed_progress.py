"""`recstream embed` shows a progress bar on a terminal (a real pseudo-terminal here) and none
when its stderr is a pipe or a file."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def embed(work: Path, stderr) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "recstream"), "embed", "--workdir", str(work),
                             "--dataset", "synthetic", "--synthetic", '{"items": 120}', "--no-materialize"],
                            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)


def test_a_progress_bar_on_a_terminal_and_none_elsewhere(tmp_path):
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = embed(tmp_path / "a", child)
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=120)
    os.close(main)
    assert proc.returncode == 0
    frames = seen.decode(errors="replace").replace("\r", "\n").splitlines()
    assert any(f.startswith("embed mm-v1: 100%|") and "120/120" in f for f in frames), frames[-5:]

    piped = embed(tmp_path / "b", subprocess.PIPE)
    _, err = piped.communicate(timeout=120)
    assert piped.returncode == 0 and b"%|" not in err
