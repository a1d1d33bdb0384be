"""`recstream broker`, `topics` and `produce` as a user runs them: each a separate process, the
broker left running between them and found again through its folder, stopped by its PID."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from features.ids import stable_id
from pipelines import daemons
from pipelines.embedded.kafka import KafkaClient

pytestmark = pytest.mark.engine
RECSTREAM = [sys.executable, "-m", "pipelines.cli"]


def recstream(*args, cwd):
    run = subprocess.run([*RECSTREAM, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    return run.returncode, run.stdout, run.stderr


def test_broker_topics_and_produce_from_the_command_line(tmp_path):
    events = tmp_path / "events.jsonl"
    rows = [{"event_id": f"e{i}", "user_id": f"u{i % 7}", "item_id": f"i{i % 11}", "event_type": "click",
             "timestamp": 1_704_067_200_000 + i * 1000} for i in range(250)]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n{not json\n")
    code, out, _ = recstream("broker", "start", cwd=tmp_path)
    assert code == 0, out
    state = daemons.load(tmp_path / "runs" / "broker")
    try:
        address = re.search(r"broker up at (\S+)", out).group(1)
        assert address == state.address and daemons.running(state) == {"tansu": True}
        code, out, _ = recstream("broker", "start", cwd=tmp_path)  # a second start finds the first
        assert code == 0 and "already up" in out and daemons.load(tmp_path / "runs" / "broker") == state

        code, out, err = recstream("produce", "--file", str(events), cwd=tmp_path)
        assert code == 2 and "topic 'events' does not exist" in err and "recstream topics create events" in err
        code, out, _ = recstream("topics", "create", cwd=tmp_path)
        assert code == 0 and out.splitlines() == ["events: created", "events-dead-letters: created",
                                                  "training-examples: created", "events-accepted: created"]
        assert recstream("topics", "create", "clicks", "--partitions", "3", "--kafka", address, cwd=tmp_path)[0] == 0

        code, out, _ = recstream("produce", "--file", str(events), "--topic", "clicks", cwd=tmp_path)
        assert code == 0 and out.startswith("produced 251 events to clicks"), out  # the bad line goes too
        code, out, _ = recstream("topics", "list", cwd=tmp_path)
        assert "clicks: 3 partitions, 251 records" in out and "events: 1 partition, 0 records" in out

        with KafkaClient(address) as client:
            got = client.read("clicks", 251)
        by_key = {}
        assert sum(rec.value == b"{not json" for rec in got) == 1  # produced as it is: the job rejects it
        for rec in got:
            if rec.value == b"{not json":
                continue
            row = json.loads(rec.value)
            assert rec.key == str(stable_id(row["user_id"])).encode()  # keyed by user: in order per user
            assert rec.timestamp == row["timestamp"]  # stamped with the event's time
            by_key.setdefault(rec.key, []).append(row["timestamp"])
        assert sum(map(len, by_key.values())) == 250
        assert all(times == sorted(times) for times in by_key.values())
    finally:
        code, out, _ = recstream("broker", "stop", cwd=tmp_path)
    assert code == 0 and "stopped" in out
    assert daemons.load(tmp_path / "runs" / "broker") is None and not any(daemons.running(state).values())
    code, _, err = recstream("topics", "list", cwd=tmp_path)
    assert code == 2 and "recstream broker start" in err
