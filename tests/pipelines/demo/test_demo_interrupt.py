"""Ctrl-C in the demo, as a terminal sends it (SIGINT to the whole process group): it stops within
seconds with one line, no traceback, and nothing of it left running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.stream.cluster.standalone import process_group
from tests.helpers import terminal_popen

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stage", ["[3/8] item embeddings", "[6/8] stream"])
def test_ctrl_c_stops_the_demo_within_seconds_in_one_line(tmp_path, stage):
    demo = terminal_popen([str(Path(sys.executable).parent / "recstream"), "demo", "--workdir", str(tmp_path / "w"),
                           "--users", "60", "--steps", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path)
    try:
        for line in demo.stdout:
            if line.startswith(stage):
                break
        else:
            pytest.fail(f"the demo ended before {stage!r}: {demo.stderr.read()[-2000:]}")
        time.sleep(2)  # well inside the stage
        os.killpg(demo.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = demo.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, err[-3000:]
    assert took < 20, f"{took:.1f} s to stop"
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("recstream demo: interrupted (Ctrl-C)")
    deadline = time.monotonic() + 15
    while process_group(demo.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert process_group(demo.pid) == []
