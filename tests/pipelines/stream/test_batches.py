"""The stream job's JVM batching (pipelines/stream/jvm, pipelines.stream.batches): a line's
bucket comes from the same user text features.ids.stable_id hashes, so a user's events always
meet in one bucket; and a batch goes out before the next watermark, so the user function meets
every line at the watermark it would have met alone; and before each checkpoint barrier every
bucket gets a mark, its function's cue to save its state."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from features.ids import stable_id
from features.schema import Event
from features.validate import parse_event
from pipelines.stream.batches import ops_jar

REPO = Path(__file__).resolve().parents[3]
EVENT = {"event_id": "e1", "item_id": 7, "event_type": "click", "timestamp": 1_700_000_000_000}


def java_keys(lines: list[bytes]) -> list[str]:
    """recstream.flink.UserKey.of of each line, run in a JVM with the built jar and PyFlink's Flink jars."""
    import pyflink

    classpath = f"{ops_jar()}:{Path(pyflink.__file__).parent / 'lib'}/*"
    done = subprocess.run(["java", "-cp", classpath, "recstream.flink.UserKey"], input=b"\n".join(lines) + b"\n",
                          capture_output=True, timeout=120, check=True)
    return done.stdout.decode("utf-8").split("\n")[:-1]


def test_a_line_s_user_key_is_the_text_stable_id_hashes():
    ids = [42, "42", 42.0, 1e20, 12345678901234567890, 12345678901234567890.0, 2**70, "été", "u-\u00e9\u4e2d", -3, 0]
    lines = [json.dumps({**EVENT, "user_id": v}).encode() for v in ids]
    lines.append(json.dumps({**EVENT, "user_id": "été"}, ensure_ascii=False).encode())  # raw UTF-8, not escaped
    lines.append(b'{"user_id": 1, "event_id": "e1", "item_id": 7, "event_type": "click", '
                 b'"timestamp": 1700000000000, "user_id": 2}')  # the last one wins, as in Python's json
    lines.append(json.dumps({"nested": {"user_id": 5}, **EVENT, "user_id": 6}).encode())
    # what Python's json reads and Jackson does not by default: NaN, Infinity, a 2,000-digit number, depth 600
    lines.append(json.dumps({**EVENT, "extra": [float("nan"), float("inf"), -float("inf")], "user_id": 8})
                 .encode())
    lines.append(json.dumps({**EVENT, "big": 10**1999, "user_id": 9}).encode())
    lines.append(json.dumps({**EVENT, "deep": json.loads("[" * 600 + "]" * 600), "user_id": 10}).encode())
    keys = java_keys(lines)
    assert len(keys) == len(lines)
    for line, key in zip(lines, keys):
        event = parse_event(line, None)
        assert isinstance(event, Event), line
        assert stable_id(key) == event.user_id, (line, key)
    assert keys[0] == keys[1] == keys[2] == "42"  # one user, however the ID is written
    assert keys[7] == keys[11] == "été"
    assert keys[-3:] == ["8", "9", "10"]


def test_a_line_without_a_readable_user_has_the_empty_key():
    lines = [b"not json", b"[1, 2]", b'{"user_id": null}', b'{"user_id": true}', b'{"user_id": {"user_id": 1}}',
             b'{"user_id": 1.5}', b'{"user_id": "7"', b""]
    assert java_keys(lines) == [""] * len(lines)


PROBE = """
import sys
from pathlib import Path
from pyflink.common import Types
from pyflink.datastream.connectors.base import Sink
from pyflink.java_gateway import get_gateway
from pipelines.stream.batches import batch_by_user, bucket_of, mark_buckets
from pipelines.stream.config import StreamConfig
from pipelines.stream.driver import environment
from pipelines.stream.io import file_lines, stamp_files, watermarks
from tests.pipelines.stream.batch_probe import MarkProbe, WatermarkProbe
work = Path(sys.argv[1])
cfg = StreamConfig(workdir=work, source=work / "in")
RECORD = Types.TUPLE([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
env, _ = environment(cfg)
env.get_config().set_auto_watermark_interval(1)
env.enable_checkpointing(20)
lines = stamp_files(file_lines(env, str(cfg.source), follow=False), watermarks(0, 60_000), None)
# no flush by time or size: only a watermark, a checkpoint or the end of the input hands a batch on
probe = batch_by_user(lines, 4, 600_000, 10**9).key_by(bucket_of, key_type=Types.INT()).process(
    WatermarkProbe(str(work / "seen.json")), output_type=RECORD)
marked = mark_buckets(probe, 3, RECORD).key_by(bucket_of, key_type=Types.INT()).process(MarkProbe(str(work / "marks.json")))
marked.sink_to(Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()))
env.execute("probe")
"""


@pytest.mark.engine
def test_a_batch_goes_out_before_the_next_watermark(tmp_path):
    (tmp_path / "in").mkdir()
    n = 30_000  # read through a Python timestamp assigner: far longer than the 1 ms watermark interval
    start = 1_700_000_000_000
    rows = [{**EVENT, "event_id": f"e{i}", "user_id": i % 50, "timestamp": start + i} for i in range(n)]
    (tmp_path / "in" / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads((tmp_path / "seen.json").read_text())
    seen = probe["batches"]
    assert sorted(t for batch in seen for t in batch["times"]) == [r["timestamp"] for r in rows]  # nothing lost
    # in time order (one file, one reader): every line is newer than the watermark its batch met
    assert all(min(batch["times"]) > batch["watermark"] for batch in seen), [
        (b["watermark"], min(b["times"])) for b in seen if min(b["times"]) <= b["watermark"]][:5]
    # and watermarks did pass between batches (else this test proves nothing)
    assert any(batch["watermark"] > start for batch in seen)
    # before each checkpoint barrier every bucket got a mark (an empty batch), from BatchByUser and from
    # MarkBuckets (3 buckets there: a record of bucket 3 passes on, with no mark)
    marks = {int(b): n for b, n in probe["marks"].items()}
    assert set(marks) == {0, 1, 2, 3} and len(set(marks.values())) == 1, marks
    after = json.loads((tmp_path / "marks.json").read_text())
    assert {int(b): n for b, n in after["marks"].items()} == {b: marks[0] for b in range(3)}, after
    assert sum(after["records"].values()) == len(seen)
