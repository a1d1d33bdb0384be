"""Bad and extreme input for the backfill: a user with 10**6 events, unknown users and items,
empty input, unsorted input, per-type caps through Beam, a corrupt offline Parquet file."""
from __future__ import annotations

import json
import random
import resource
import tracemalloc
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.conftest import NOW_MS, T0

from features import offline, sequence
from features.labels import LabelPolicy
from features.negatives import ItemPool
from features.schema import EVENT_SCHEMA, Event
from features.sequence import SequencePolicy
from features.tables import TABLES
from features.validate import parse_event
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream
from tests.features.test_sequence import naive_capped_sequence

HEAVY = 1_000_000
CAPS = SequencePolicy(max_len=200, type_caps={"click": 50})


def heavy_user_events(n: int):
    """One user's n distinct events, oldest first: three clicks to every purchase."""
    for i in range(n):
        yield Event(f"e{i}", 7, i, "buy" if i % 4 == 0 else "click", T0 + i)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_a_user_with_a_million_events_keeps_the_cap_in_bounded_memory():
    """The stream's state: RSS sampled as the events go in, and Python allocations traced over the
    last 10**5 (tracing all 10**6 would take most of a minute)."""
    state, before, grown = sequence.empty(), rss_bytes(), 0
    for i, event in enumerate(heavy_user_events(HEAVY)):
        sequence.add(state, event, CAPS)
        if i % 100_000 == 0:
            grown = max(grown, rss_bytes() - before)
        if i == HEAVY - 100_000:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    got = sequence.finalize(state, CAPS)
    tail = list(heavy_user_events(HEAVY))[-2_000:]  # older events cannot reach the 50 clicks or the last 200
    assert got == naive_capped_sequence(tail, CAPS) and got["seq_length"] == 200
    assert len(state) <= 2 * CAPS.state_limit()
    # Keeping every behavior would take over 150 MB (a tuple, its id string and a dict slot each).
    assert peak < 1_000_000, f"the sequence state's allocations peaked at {peak} bytes"
    assert grown < 30_000_000, f"RSS grew by {grown} bytes"


def test_a_user_with_a_million_events_in_the_batch_builders():
    ids = np.arange(HEAVY)
    event_ids = pc.binary_join_element_wise("e", pc.cast(pa.array(ids), pa.string()), "")
    table = pa.table({"event_id": event_ids, "user_id": np.full(HEAVY, 7),
                      "item_id": ids, "event_type": np.where(ids % 4 == 0, "buy", "click"),
                      "timestamp": T0 + ids, "category_id": pa.nulls(HEAVY, pa.int64()),
                      "value": pa.nulls(HEAVY, pa.float64()), "request_id": pa.nulls(HEAVY, pa.string()),
                      "position": pa.nulls(HEAVY, pa.int32())}, schema=EVENT_SCHEMA)
    table = table.take(pa.array(np.random.default_rng(0).permutation(HEAVY)))  # unsorted
    log = offline.behavior_log(table, CAPS)
    assert log.num_rows == HEAVY
    row = offline.lifelong_sequences(table, log, CAPS).to_pylist()
    tail = list(heavy_user_events(HEAVY))[-2_000:]
    expected = naive_capped_sequence(tail, CAPS)
    assert len(row) == 1 and {k: row[0][k] for k in expected} == expected
    recent = offline.latest_sequences(log, 50).to_pylist()[0]
    assert recent["seq_item_ids"] == list(range(HEAVY - 50, HEAVY))


def test_unknown_items_are_positives_and_negatives_come_from_the_catalog():
    """Users and items need no registration: an item outside the catalog is still a behavior,
    in the log and as a next_item positive; negatives are drawn from the catalog only."""
    events = [Event(f"e{i}", 1 + i % 3, 1_000 + i, "click", T0 + i, category_id=5) for i in range(30)]
    events += [Event(f"c{i}", 9, 10 + i, "view", T0 - 1) for i in range(10)]  # the catalog's items, taken early
    catalog = np.arange(10, 20)
    table = pa.Table.from_pylist([e._asdict() for e in events], schema=EVENT_SCHEMA)
    pool = ItemPool.from_table(table, catalog)
    got = offline.examples(table, LabelPolicy(kind="next_item", negatives=2, seed=1), pool)
    rows = got.to_pylist()
    positives = {r["item_id"] for r in rows if r["label"] == 1}
    assert positives == {e.item_id for e in events} - {1_000, 1_001, 1_002, 10}  # min_history=1: each user's first
    negatives = {r["item_id"] for r in rows if r["label"] == 0 and r["user_id"] != 9}
    assert negatives and negatives <= set(catalog.tolist())
    assert offline.behavior_log(table, SequencePolicy()).num_rows == 40


def lines_of(seed: int) -> list[str]:
    stream = SyntheticStream(SyntheticConfig(users=8, items=40, categories=4, days=2, sessions_per_user=5,
                                             bad_fraction=0.05, seed=seed))
    return [x for window, _ in stream.windows() for x in window]


def backfill(tmp, name: str, files: list[list[str]], policy=CAPS) -> tuple[dict, dict]:
    raw = tmp / name / "raw"
    raw.mkdir(parents=True)
    for i, lines in enumerate(files):
        (raw / f"events-{i:05d}.jsonl").write_text("".join(x + "\n" for x in lines))
    counts = run_backfill(BackfillConfig(input=str(raw / "*.jsonl"), output=str(tmp / name / "offline"),
                                         sequence=policy, now_ms=NOW_MS, stats_as_of_ms=T0 + 3 * 86_400_000))
    tables = {t: pq.read_table(tmp / name / "offline" / t) for t in TABLES}
    return counts, tables


def as_multiset(table: pa.Table) -> Counter:
    return Counter(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())



@pytest.mark.engine
def test_unsorted_input_gives_the_same_tables_and_caps_hold(tmp_path):
    lines = lines_of(1)
    rng = random.Random(2)
    shuffled = lines[:]
    rng.shuffle(shuffled)
    counts_a, a = backfill(tmp_path, "sorted", [lines])
    counts_b, b = backfill(tmp_path, "unsorted", [shuffled[:100], shuffled[100:], []])  # with an empty file
    assert counts_a == counts_b and counts_a["rejected_total"] > 0
    for name in TABLES:
        assert as_multiset(a[name]) == as_multiset(b[name]), name
    events = [e for e in (parse_event(x, NOW_MS) for x in lines) if isinstance(e, Event)]
    by_user: dict = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    rows = {r["user_id"]: r for r in a["user_sequence"].to_pylist()}
    assert rows and set(rows) <= set(by_user)
    for user, evs in by_user.items():
        expected = naive_capped_sequence(evs, CAPS)
        if expected["seq_length"]:
            assert {k: rows[user][k] for k in expected} == expected
            assert expected["seq_event_types"].count(2) <= 50  # clicks (code 2) capped


@pytest.mark.engine
def test_empty_input_and_only_bad_records_write_empty_tables(tmp_path):
    counts, tables = backfill(tmp_path, "empty", [[]])
    assert counts == {"read": 0, "accepted": 0, "rejected": {}, "duplicates": 0, "examples": 0, "negatives": 0,
                      "rejected_total": 0}
    assert all(t.num_rows == 0 and t.schema.equals(TABLES[n]) for n, t in tables.items())
    counts, tables = backfill(tmp_path, "bad", [["{", "[1]", '{"user_id": 1}']])
    assert counts["read"] == 3 and counts["accepted"] == 0 and counts["rejected_total"] == 3
    assert tables["rejected"].num_rows == 3 and all(t.num_rows == 0 for n, t in tables.items() if n != "rejected")


@pytest.mark.engine
def test_a_corrupt_offline_parquet_file_is_named(tmp_path):
    from pipelines.store.historical import historical_features  # imports Feast: only this test needs it

    backfill(tmp_path, "run", [lines_of(3)], policy=SequencePolicy())
    part = sorted((tmp_path / "run" / "offline" / "behavior_log").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:40] + b"not parquet")
    with pytest.raises(pa.ArrowInvalid, match=part.name):
        historical_features(tmp_path / "run", pa.table({"user_id": [1], "timestamp": [T0]}),
                            {"user_sequence": 5, "user_recent": 5, "user_category_sequence": 5})
