"""`recstream embed` shows a progress bar on a terminal (a real pseudo-terminal here) and none
when its stderr is a pipe or a file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.terminal import on_terminal

pytestmark = pytest.mark.engine


def embed(work: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "recstream"), "embed", "--workdir", str(work),
            "--dataset", "synthetic", "--synthetic", '{"items": 120}', "--no-materialize"]


def test_a_progress_bar_on_a_terminal_and_none_elsewhere(tmp_path):
    code, frames = on_terminal(embed(tmp_path / "a"))
    assert code == 0
    assert any(f.startswith("embed mm-v1: 100%|") and "120/120" in f for f in frames), frames[-5:]

    piped = subprocess.run(embed(tmp_path / "b"), capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert piped.returncode == 0 and b"%|" not in piped.stderr
