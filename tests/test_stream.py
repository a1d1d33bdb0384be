"""The PyFlink stream job against Feast: backfill + stream == a naive oracle over all events."""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import pytest

from features import sequence
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.backfill import BackfillConfig, run_backfill
from pipelines.feature_store import apply, materialize_user_sequences, open_store, read_user_sequences
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from pipelines.stream import StreamConfig, StreamJobError, run_stream

SYN = SyntheticConfig(users=30, items=300, categories=10, days=3, sessions_per_user=8, bad_fraction=0.01, seed=7)
SPLIT_MS = SYN.start_ms + 2 * DAY_MS
NOW_MS = SYN.start_ms + 30 * DAY_MS
POLICY = SequencePolicy(max_len=50)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="flush_every"):
        StreamConfig(source=tmp_path, workdir=tmp_path, dead_letter=tmp_path, flush_every=0)
    with pytest.raises(ValueError, match="source"):
        StreamConfig(source="", workdir=tmp_path, dead_letter=tmp_path)
    with pytest.raises(TypeError):
        StreamConfig(source=tmp_path, workdir=tmp_path, dead_letter=tmp_path, flush_evry=5)
    with pytest.raises(FileNotFoundError, match="registry"):
        run_stream(StreamConfig(source=tmp_path, workdir=tmp_path, dead_letter=tmp_path / "dead"))


def _split_events(tmp_path):
    """Early lines (by event time; rejected lines by hour) and later lines, plus late copies of early clicks."""
    early, later = [], []
    for hour, (lines, _) in enumerate(SyntheticStream(SYN).windows()):
        for line in lines:
            got = parse_event(line, NOW_MS)
            is_later = got.timestamp >= SPLIT_MS if isinstance(got, Event) else hour >= 48
            (later if is_later else early).append(line)
    clicks = [line for line in early if '"click"' in line and isinstance(parse_event(line, NOW_MS), Event)]
    late_copies = clicks[::max(1, len(clicks) // 3)][:3]
    write_json_lines(early, tmp_path / "raw")
    write_json_lines(later + late_copies, tmp_path / "stream")
    # Bad UTF-8 must be a not_utf8 rejection in the stream too, as in the backfill.
    bad = b'{"event_id": "bad-\xff", "user_id": 1, "item_id": 2, "event_type": "click", "timestamp": 1}'
    with open(sorted((tmp_path / "stream").glob("*.jsonl"))[0], "ab") as f:
        f.write(bad + b"\n")
    return early, later + late_copies + [bad], late_copies


def _dead_letters(folder):
    return [json.loads(line) for path in sorted(folder.glob("dead*.jsonl")) for line in path.read_text().splitlines()]


def _oracle(lines):
    by_user = defaultdict(list)
    for line in lines:
        got = parse_event(line, NOW_MS)
        if isinstance(got, Event):
            by_user[got.user_id].append(got)
    return {u: sequence.finalize(sequence.add_all(sequence.empty(), evs, POLICY), POLICY) for u, evs in by_user.items()}


@pytest.mark.engine
def test_backfill_plus_stream_equals_oracle_and_replay_changes_nothing(tmp_path):
    early, streamed, late_copies = _split_events(tmp_path)
    run_backfill(BackfillConfig(input=str(tmp_path / "raw" / "*.jsonl"), output=str(tmp_path / "offline"),
                                sequence=POLICY, now_ms=NOW_MS))
    store = open_store(tmp_path)
    apply(store, tmp_path)
    materialize_user_sequences(store, tmp_path)
    expected = _oracle(early + streamed)
    users = sorted(expected)
    before = read_user_sequences(store, users)

    parsed = [parse_event(line, NOW_MS) for line in streamed]
    floor = {u: (row or {}).get("last_event_ms", -1) for u, row in before.items()}
    seq_events = [e for e in parsed if isinstance(e, Event) and e.event_type in POLICY.event_types]
    late = [e for e in seq_events if e.timestamp <= floor[e.user_id]]
    assert len(late) == len(late_copies) == 3  # a strict time split leaves only the planted copies late

    cfg = StreamConfig(source=tmp_path / "stream", workdir=tmp_path, dead_letter=tmp_path / "dead1",
                       sequence=POLICY, flush_every=100, now_ms=NOW_MS)
    started = time.perf_counter()
    counts = run_stream(cfg)
    seconds = time.perf_counter() - started
    print(f"\nstream job: {len(streamed)} lines in {seconds:.1f} s ({len(streamed) / seconds:.0f} lines/s)")

    after = read_user_sequences(store, users)
    assert after == expected  # backfill + stream == the oracle over every event
    invalid = Counter(r.reason for r in parsed if not isinstance(r, Event))
    assert invalid["not_utf8"] == 1 and len(invalid) > 1  # the planted bad bytes and bad_fraction's records
    assert counts["read"] == len(streamed) == counts["accepted"] + counts["rejected_total"]
    assert counts["rejected"] == {**invalid, "late": 3} and counts["late"] == 3
    assert counts["applied"] == len(seq_events) - 3
    assert counts["users_updated"] == len({e.user_id for e in seq_events if e not in late})
    assert counts["users_updated"] <= counts["rows_written"] <= counts["applied"]
    dead = _dead_letters(tmp_path / "dead1")
    assert Counter(d["reason"] for d in dead) == Counter(counts["rejected"])
    assert sorted(d["raw"] for d in dead if d["reason"] == "late") == sorted(late_copies)

    # Replay of the same input: every sequence event is now at or below the online floor.
    started = time.perf_counter()
    counts2 = run_stream(StreamConfig(source=tmp_path / "stream", workdir=tmp_path, dead_letter=tmp_path / "dead2",
                                      sequence=POLICY, flush_every=100, now_ms=NOW_MS))
    print(f"replay: {time.perf_counter() - started:.1f} s")
    assert read_user_sequences(store, users) == expected
    assert counts2["late"] == len(seq_events)
    assert counts2["applied"] == counts2["rows_written"] == counts2["users_updated"] == 0
    assert counts2["read"] == counts["read"]
    assert len(_dead_letters(tmp_path / "dead2")) == counts2["rejected_total"]

    # The job ran in a child process, so Beam still works in this one (PyFlink's in-process
    # workers used to leave Beam's worker state broken for the next Beam job).
    again = run_backfill(BackfillConfig(input=str(tmp_path / "raw" / "*.jsonl"), output=str(tmp_path / "again"),
                                        sequence=POLICY, now_ms=NOW_MS))
    assert again["read"] == len(early) and again["accepted"] > 0


@pytest.mark.engine
def test_a_failing_job_reports_its_traceback(tmp_path):
    (tmp_path / "stream").mkdir()
    valid = {"event_id": "a", "user_id": 1, "item_id": 2, "event_type": "click", "timestamp": SYN.start_ms}
    (tmp_path / "stream" / "e.jsonl").write_text(json.dumps(valid) + "\n")  # its bootstrap reads the store
    (tmp_path / "feast").mkdir()
    (tmp_path / "feast" / "registry.db").write_bytes(b"not a feast registry")
    with pytest.raises(StreamJobError, match="Traceback"):
        run_stream(StreamConfig(source=tmp_path / "stream", workdir=tmp_path, dead_letter=tmp_path / "dead"))
