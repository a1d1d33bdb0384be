"""The real backfill on a tiny synthetic set, on each engine (local on one thread and on three,
and Beam), held to parse_event, the naive sequence oracle, labels.build_examples and the
point-in-time slices."""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import NOW_MS, naive_dedup, naive_sequence

from features import pit
from features.ids import stable_ids
from features.labels import LabelPolicy, build_examples
from features.negatives import ItemPool
from features.packed import unpack
from features.schema import EVENT_TYPE_CODE, Event, Rejection
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.engine

MAX_LEN = 8
LABELS = LabelPolicy(kind="impression_click", window_ms=90_000)  # clicks come 1-120 s later: both labels occur


def raw_lines(rng: random.Random) -> list[bytes]:
    """Synthetic lines with 10% corrupted, plus exact and altered duplicates and undecodable bytes."""
    cfg = SyntheticConfig(users=10, items=60, categories=6, days=2, sessions_per_user=6, bad_fraction=0.1, seed=5)
    lines = [x for window, _ in SyntheticStream(cfg).windows() for x in window]
    valid = [json.loads(x) for x in lines if isinstance(parse_event(x, now_ms=NOW_MS), Event)]
    lines += [json.dumps(rec) for rec in rng.sample(valid, 40)]  # exact redeliveries
    for rec in rng.sample(valid, 40):  # same event_id, other content (type may cross the sequence policy)
        lines.append(json.dumps({**rec, "item_id": rec["item_id"] + 1, "timestamp": rec["timestamp"] + rng.choice([0, 7]),
                                 "event_type": rng.choice(["impression", "click", "view"])}))
    for i in range(3):  # a user who was only ever shown items: no sequence row
        lines.append(json.dumps({**valid[0], "event_id": f"lonely{i}", "user_id": "lonely", "event_type": "impression"}))
    rng.shuffle(lines)
    return [x.encode("utf-8") for x in lines] + [b'{"event_id": "bad-\xff", "user_id": 1}', b"", b"[1, 2]"]


def read_rows(folder):
    return pq.read_table(folder).to_pylist()


ENGINES = [("local", 1), ("local", 3), ("beam", None)]


@pytest.fixture(scope="module", params=ENGINES, ids=lambda e: f"{e[0]}-{e[1]}" if e[1] else e[0])
def run(tmp_path_factory, request):
    engine, workers = request.param
    tmp = tmp_path_factory.mktemp("backfill")
    lines = raw_lines(random.Random(0))
    (tmp / "raw").mkdir()
    half = len(lines) // 2
    (tmp / "raw" / "events-00000.jsonl").write_bytes(b"\n".join(lines[:half]) + b"\n")
    (tmp / "raw" / "events-00001.jsonl").write_bytes(b"\n".join(lines[half:]) + b"\n")
    cfg = BackfillConfig(input=str(tmp / "raw" / "*.jsonl"), output=str(tmp / "out"),
                         sequence=SequencePolicy(max_len=MAX_LEN), labels=LABELS, now_ms=NOW_MS)
    counts = run_backfill(cfg, engine=engine, workers=workers)
    parsed = [parse_event(x, now_ms=NOW_MS) for x in lines]
    events = [e for e in parsed if isinstance(e, Event)]
    by_user = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    return tmp / "out", counts, parsed, by_user


def test_every_record_is_accounted_for(run):
    out, counts, parsed, _ = run
    rejections = [r for r in parsed if isinstance(r, Rejection)]
    assert counts["read"] == len(parsed) == counts["accepted"] + counts["rejected_total"]
    assert counts["accepted"] == len(parsed) - len(rejections)
    assert counts["rejected"] == dict(Counter(r.reason for r in rejections))
    assert {"malformed_json", "not_utf8", "not_an_object", "missing_field"} <= set(counts["rejected"])
    assert json.loads((out / "counts.json").read_text()) == counts


def test_rejected_rows_on_disk_are_the_counted_rejections(run):
    out, counts, parsed, _ = run
    on_disk = Counter((r["reason"], r["field"], r["raw"]) for r in read_rows(out / "rejected"))
    expected = Counter((r.reason, r.field, r.raw) for r in parsed if isinstance(r, Rejection))
    assert on_disk == expected
    assert sum(on_disk.values()) == counts["rejected_total"]


def test_duplicates_are_counted(run):
    _, counts, _, by_user = run
    copies = Counter((e.user_id, e.event_id) for evs in by_user.values() for e in evs)
    assert counts["duplicates"] == sum(n - 1 for n in copies.values()) >= 80


def test_user_sequences_equal_the_naive_oracle(run):
    out, _, _, by_user = run
    rows = {r.pop("user_id"): r for r in read_rows(out / "user_sequence")}
    with_behaviors = {u for u, events in by_user.items() if naive_sequence(events, MAX_LEN)["seq_length"]}
    assert set(rows) == with_behaviors and len(with_behaviors) < len(by_user)  # impression-only users: no row
    for user in with_behaviors:
        row, events = rows[user], by_user[user]
        assert row.pop("feature_ts") == datetime.fromtimestamp(row["last_event_ms"] / 1000, tz=timezone.utc)
        assert unpack("sequence", row.pop("packed")) == row == naive_sequence(events, MAX_LEN)


def test_behavior_log_is_deduplicated_and_slices_back_to_the_sequences(run):
    out, _, _, by_user = run
    log = pq.read_table(out / "behavior_log")
    expected = Counter()
    for user, events in by_user.items():
        kept = naive_dedup([e for e in events if e.event_type in SequencePolicy().event_types])
        expected.update((user, e.timestamp, e.event_id, e.item_id, e.category_id or 0, EVENT_TYPE_CODE[e.event_type])
                        for e in kept)
    assert Counter(tuple(r.values()) for r in log.to_pylist()) == expected
    # The sequence as of "after everything" from the log equals the user_sequence table.
    users = sorted(by_user)
    sliced = pit.sequences_as_of(pit.sort_log(log), users, [NOW_MS] * len(users), MAX_LEN).to_pylist()
    table = {r["user_id"]: r for r in read_rows(out / "user_sequence")}
    for user, row in zip(users, sliced):
        if user not in table:  # no behaviors: an empty slice and no sequence row
            assert row["seq_length"] == 0
            continue
        assert row == {k: table[user][k] for k in row}, user


def test_examples_equal_build_examples(run):
    out, counts, _, by_user = run
    expected = Counter()
    for events in by_user.values():
        expected.update(build_examples(naive_dedup(events), LABELS))
    got = Counter(tuple(r[k] for k in ("user_id", "item_id", "category_id", "timestamp", "label"))
                  for r in read_rows(out / "examples"))
    assert got == expected
    assert counts["examples"] == sum(expected.values())
    assert {label for _, _, _, _, label in expected} == {0, 1}


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
@pytest.mark.parametrize("engine", ["local", "beam"])
def test_next_item_examples_with_a_catalog(tmp_path, sampling, engine):
    """The item pool side input: next_item examples equal build_examples with a pool of every
    user's behaviors, restricted to the catalog (half the items here), under either sampling."""
    stream = SyntheticStream(SyntheticConfig(users=6, items=50, categories=5, days=1, sessions_per_user=4, seed=2))
    lines = [x for window, _ in stream.windows() for x in window]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "events-00000.jsonl").write_text("\n".join(lines) + "\n")
    items = stable_ids(stream.catalog().column("item_id"))[::2]
    pq.write_table(pa.table({"item_id": items}), tmp_path / "catalog.parquet")
    policy = LabelPolicy(kind="next_item", negatives=2, min_history=1, seed=3, sampling=sampling)
    counts = run_backfill(BackfillConfig(input=str(tmp_path / "raw" / "*.jsonl"), output=str(tmp_path / "out"),
                                         catalog=str(tmp_path / "catalog.parquet"), labels=policy, now_ms=NOW_MS),
                          engine=engine)
    by_user = defaultdict(list)
    for e in (parse_event(x, now_ms=NOW_MS) for x in lines):
        if isinstance(e, Event):
            by_user[e.user_id].append(e)
    deduped = {user: naive_dedup(events) for user, events in by_user.items()}
    pool = ItemPool.from_events([e for events in deduped.values() for e in events], items)
    expected = Counter()
    for events in deduped.values():
        expected.update(build_examples(events, policy, pool))
    got = Counter(tuple(r.values()) for r in read_rows(tmp_path / "out" / "examples"))
    assert got == expected and counts["examples"] == sum(expected.values()) > 0
    labels = Counter(label for *_, label in expected.elements())
    assert 0 < labels[0] <= 2 * labels[1]
    assert {item for _, item, _, _, label in expected if label == 0} <= set(items.tolist())
