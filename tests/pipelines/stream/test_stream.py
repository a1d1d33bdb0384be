"""The PyFlink stream job against Feast: backfill + stream == a naive oracle over all events."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.conftest import naive_views
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.store.feature_store import open_store
from pipelines.store.publish import publish
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from pipelines.stream.config import StreamConfig
from pipelines.stream.driver import StreamJobError, keyed_functions, run_stream
from tests.helpers import online_views, views_differences

SYN = SyntheticConfig(users=30, items=300, categories=10, days=3, sessions_per_user=8, bad_fraction=0.01, seed=7)
SPLIT_MS = SYN.start_ms + 2 * DAY_MS
NOW_MS = SYN.start_ms + 30 * DAY_MS
POLICY = SequencePolicy(max_len=50)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="report_every"):
        StreamConfig(source=tmp_path, workdir=tmp_path, dead_letter=tmp_path, report_every=0)
    with pytest.raises(ValueError, match="start_timeout_s"):
        StreamConfig(source=tmp_path, workdir=tmp_path, start_timeout_s=0)
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


def _valid(lines) -> list[Event]:
    return [e for e in (parse_event(line, NOW_MS) for line in lines) if isinstance(e, Event)]


@pytest.mark.engine
@pytest.mark.parametrize("parallelism", [1, 2])
def test_backfill_plus_stream_equals_oracle_and_replay_changes_nothing(tmp_path, parallelism):
    """Every online view (lifelong, recent, category sub-sequences, user and item statistics)
    after the backfill of the early events and the stream of the later ones equals the naive
    oracle over all of them; a replay changes nothing. With one slot, and with two (each keyed
    function runs as two subtasks, as in infra/flink-deployment.yaml)."""
    early, streamed, late_copies = _split_events(tmp_path)
    run_backfill(BackfillConfig(input=str(tmp_path / "raw" / "*.jsonl"), output=str(tmp_path / "offline"),
                                sequence=POLICY, now_ms=NOW_MS, stats_as_of_ms=SPLIT_MS))
    store = open_store(tmp_path)
    gates, _ = publish(store, tmp_path, {"user_sequence": POLICY.max_len, "user_recent": 50,
                                         "user_category_sequence": 50})
    assert all(g.passed for g in gates), [g.summary() for g in gates]
    expected = naive_views(_valid(early + streamed), POLICY.max_len, 50, 50)
    end_ms = max(e.timestamp for e in _valid(early + streamed)) + 1
    assert views_differences(online_views(store, expected), expected, end_ms)  # the stream has work to do

    parsed = [parse_event(line, NOW_MS) for line in streamed]
    valid = [e for e in parsed if isinstance(e, Event)]
    assert all(e.timestamp >= SPLIT_MS for e in valid if e not in [parse_event(c, NOW_MS) for c in late_copies])
    seq_events = [e for e in valid if e.event_type in POLICY.event_types]

    cfg = StreamConfig(source=tmp_path / "stream", workdir=tmp_path, dead_letter=tmp_path / "dead1",
                       sequence=POLICY, report_every=100, now_ms=NOW_MS, parallelism=parallelism)
    started = time.perf_counter()
    counts = run_stream(cfg)
    seconds = time.perf_counter() - started
    print(f"\nstream job: {len(streamed)} lines in {seconds:.1f} s ({len(streamed) / seconds:.0f} lines/s)")

    assert views_differences(online_views(store, expected), expected, end_ms) == []  # backfill + stream == oracle
    invalid = Counter(r.reason for r in parsed if not isinstance(r, Event))
    assert invalid["not_utf8"] == 1 and len(invalid) > 1  # the planted bad bytes and bad_fraction's records
    assert counts["read"] == len(streamed) == counts["accepted"] + counts["rejected_total"]
    assert counts["rejected"] == {**invalid, "late": 3} and counts["late"] == 3  # the planted copies: already online
    assert counts["applied"] == len(seq_events) - 3
    assert counts["users_updated"] == len({e.user_id for e in valid}) and counts["item_deltas_skipped"] == 0
    assert counts["item_deltas"] == len(valid) - 3  # no copies with new content here: one delta per new event
    assert counts["opened"] == keyed_functions(cfg) == 2 * parallelism  # what the start deadline waits for
    assert set(counts["rows_by_view"]) == set(expected) and counts["rows_written"] <= 5 * len(valid)
    dead = _dead_letters(tmp_path / "dead1")
    assert Counter(d["reason"] for d in dead) == Counter(counts["rejected"])
    assert sorted(d["raw"] for d in dead if d["reason"] == "late") == sorted(late_copies)
    accepted = [line for path in sorted((tmp_path / "stream_accepted").glob("accepted*.jsonl"))
                for line in path.read_text().splitlines()]
    assert len(accepted) == counts["accepted"]  # the accepted records, as they came: not the late copies
    assert sorted(accepted) == sorted(line for line in streamed if isinstance(line, str) and line not in late_copies
                                      and isinstance(parse_event(line, NOW_MS), Event))
    # the examples leave in the order of their label times (per subtask), as one timer per impression emitted them
    parts = sorted((tmp_path / "stream_examples").glob("examples*.jsonl"))
    label_times = [[json.loads(line)["label_ms"] for line in path.read_text().splitlines()] for path in parts]
    assert sum(map(len, label_times)) == counts["examples"] > 0
    assert all(times == sorted(times) for times in label_times)

    # Replay of the same input: every event is now at or below its user's floors.
    started = time.perf_counter()
    counts2 = run_stream(StreamConfig(source=tmp_path / "stream", workdir=tmp_path, dead_letter=tmp_path / "dead2",
                                      sequence=POLICY, report_every=100, now_ms=NOW_MS, parallelism=parallelism))
    print(f"replay: {time.perf_counter() - started:.1f} s")
    assert views_differences(online_views(store, expected), expected, end_ms) == []
    assert counts2["late"] == len(valid)
    assert counts2["applied"] == counts2["rows_written"] == counts2["users_updated"] == counts2["item_deltas"] == 0
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


@pytest.mark.engine
def test_functions_that_do_not_open_in_time_stop_the_job_with_one_line(tmp_path):
    """A start that hangs (e.g. an import deadlock in the Python operators) fails instead of waiting forever."""
    (tmp_path / "stream").mkdir()
    (tmp_path / "stream" / "e.jsonl").write_text("{}\n")
    (tmp_path / "feast").mkdir()
    (tmp_path / "feast" / "registry.db").write_bytes(b"not a registry: no function opens before the deadline")
    # The clock starts before the job is even built: no function can open within 1 ms.
    cfg = StreamConfig(source=tmp_path / "stream", workdir=tmp_path, start_timeout_s=0.001)
    with pytest.raises(StreamJobError) as failed:
        run_stream(cfg)
    assert str(failed.value).startswith("the stream job's functions did not open within 0.001 s (0 of 2 open)")
    assert "\n" not in str(failed.value)
