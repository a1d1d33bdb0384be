"""Run a command with its stderr on a real pseudo-terminal, for the progress bars that show only there."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios


def on_terminal(cmd: list[str], timeout: float = 120) -> tuple[int, list[str]]:
    """(exit code, what the terminal showed as lines: each carriage-return redraw its own line)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=child, stdin=subprocess.DEVNULL)
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
    proc.communicate(timeout=timeout)
    os.close(main)
    return proc.returncode, seen.decode(errors="replace").replace("\r", "\n").splitlines()
