"""docs/operations.md works as written: every `bash` block, in order, in an empty folder, with
the project's `recstream` and `python` first on PATH (as `source .venv/bin/activate` puts them)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import daemons
from pipelines.stream.connector import REPO

pytestmark = pytest.mark.e2e
DOC = REPO / "docs" / "operations.md"


def test_the_operations_walkthrough_runs_as_written(tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5, "docs/operations.md lost its command blocks"
    script = tmp_path / "operations.sh"
    script.write_text("set -euo pipefail\n" + "".join(blocks))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    try:
        run = subprocess.run(["bash", "-x", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=1200)
    finally:  # whatever the script left running when it failed
        for folder in ("flink", "broker"):
            left = daemons.load(tmp_path / "runs" / folder)
            if left is not None:
                daemons.stop(left)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert re.search(r"raw_user_id raw_item_id +seq_length +user_clicks_7d\n0 +7 +101", out), out[-6000:]
    assert "events: lag 0 (group recstream-stream committed" in out
    assert re.search(r"job [0-9a-f]{32} +RUNNING", out) and "stopped with a savepoint at" in out
    assert re.search(r"^window 1: 2,000 records", out, re.M), out[-4000:]
    assert "report: runs/ops/report.html (2 plots)" in out
    assert "cluster at 127.0.0.1" in out and "stopped" in out
    assert daemons.load(tmp_path / "runs" / "flink") is None and daemons.load(tmp_path / "runs" / "broker") is None
