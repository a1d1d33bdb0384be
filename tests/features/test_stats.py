"""Windowed stats: the tile algebra (any order, any merge tree) and the vectorized as-of path
both equal a naive oracle of the definition, written here independently."""
from __future__ import annotations

import random

import numpy as np
import pytest

from features import stats

HOUR, DAY, MIN = 3_600_000, 86_400_000, 60_000
T0 = 1_704_067_200_000
BEHAVIORS = frozenset({"click", "view", "buy"})
TYPES = ("impression", "click", "view", "buy")


def oracle(events, t):
    """Count (type) events with ts < t whose minute starts at or after t - window."""
    out = {}
    for name, length in (("1h", HOUR), ("1d", DAY), ("7d", 7 * DAY), ("life", None)):
        chosen = [e for e in events if e[0] < t and (length is None or e[0] - e[0] % MIN >= t - length)]
        imp = sum(e[1] == "impression" for e in chosen)
        clk = sum(e[1] == "click" for e in chosen)
        out[f"impressions_{name}"] = imp
        out[f"clicks_{name}"] = clk
        out[f"behaviors_{name}"] = sum(e[1] in BEHAVIORS for e in chosen)
        out[f"ctr_{name}"] = clk / imp if imp else 0.0
    return out


def make_events(rng, n, span):
    return [(T0 + rng.randrange(span), rng.choice(TYPES)) for _ in range(n)]


def state_of(events):
    s = stats.empty()
    for ts, kind in events:
        stats.add(s, ts, stats.kind_index(kind, BEHAVIORS))
    return s


@pytest.mark.parametrize("seed", range(5))
def test_state_in_any_order_equals_the_oracle(seed):
    rng = random.Random(seed)
    events = make_events(rng, 300, 10 * DAY)
    now = max(e[0] for e in events) + rng.choice([1, MIN, HOUR + 7, 2 * DAY])
    expected = oracle(events, now)
    rng.shuffle(events)
    assert stats.at(state_of(events), now) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_merge_of_split_states_equals_the_whole(seed):
    rng = random.Random(seed)
    events = make_events(rng, 200, 9 * DAY)
    now = max(e[0] for e in events) + 1
    parts = [events[i::3] for i in range(3)]
    merged = stats.merge([stats.merge([state_of(parts[0]), state_of(parts[1])]), state_of(parts[2])])
    assert stats.at(merged, now) == pytest.approx(stats.at(state_of(events), now))


def test_old_tiles_are_pruned_but_counted_in_lifetime():
    events = [(T0 + i * HOUR, "impression") for i in range(24 * 30)]
    s = state_of(events)
    assert len(s.tiles) <= 2 * (7 * 24 + 2) + 16  # pruned as the tiles double: at most twice the live ones
    assert stats.at(s, events[-1][0] + 1)["impressions_life"] == len(events)


def test_reading_before_the_newest_event_is_refused():
    s = state_of([(T0, "click")])
    with pytest.raises(ValueError, match="holds an event"):
        stats.at(s, T0)


@pytest.mark.parametrize("seed", range(3))
def test_vectorized_as_of_equals_the_oracle_on_every_row(seed):
    rng = random.Random(seed)
    by_key = {k: sorted(make_events(rng, rng.randrange(0, 80), 9 * DAY)) for k in (3, 5, 9)}
    keys = np.array([k for k in sorted(by_key) for _ in by_key[k]], dtype=np.int64)
    times = np.array([e[0] for k in sorted(by_key) for e in by_key[k]], dtype=np.int64)
    kinds = np.array([[e[1] == "impression", e[1] == "click", e[1] in BEHAVIORS]
                      for k in sorted(by_key) for e in by_key[k]], dtype=np.int64).reshape(-1, 3)
    queries = [(k, T0 + rng.randrange(-DAY, 10 * DAY)) for k in (3, 5, 9, 4) for _ in range(25)]
    # Also query exactly at event times and at tile edges (strictly-before, tile-start semantics).
    queries += [(3, e[0]) for e in by_key[3][:5]] + [(5, e[0] - e[0] % MIN + HOUR) for e in by_key[5][:5]]
    got = stats.as_of(keys, times, kinds, np.array([q[0] for q in queries]), np.array([q[1] for q in queries]))
    for i, (k, t) in enumerate(queries):
        expected = oracle(by_key.get(k, []), t)
        assert {name: got[name][i] for name in expected} == pytest.approx(expected), (k, t)


def test_feature_names_cover_every_window_and_kind():
    names = stats.feature_names()
    assert len(names) == 4 * 4 and "ctr_1h" in names and "behaviors_life" in names
    assert set(names) == set(stats.at(state_of([(T0, "click")]), T0 + 1))


@pytest.mark.parametrize("seed", range(4))
def test_a_row_reads_exactly_at_any_later_time_and_continues_as_the_state(seed):
    """to_row -> from_row keeps everything that can still count; read_at == the oracle later on."""
    rng = random.Random(seed)
    events = make_events(rng, 250, 12 * DAY)
    first, rest = events[:150], events[150:]
    newest = max(e[0] for e in first)
    row = stats.to_row(state_of(first), newest + 1)
    assert row == stats.to_row(state_of(list(reversed(first))), newest + 1)  # the same row in any order
    assert {k: row[k] for k in stats.feature_names()} == pytest.approx(oracle(first, newest + 1))
    state = stats.state_row(state_of(first))  # what the online views hold: the state, no values
    assert set(state) == set(stats.STATE_FIELDS) and state == {k: row[k] for k in stats.STATE_FIELDS}
    for later in (newest + 1, newest + HOUR, newest + 3 * DAY, newest + 8 * DAY):
        assert stats.read_at(row, later) == pytest.approx(oracle(first, later))
        assert stats.read_at(state, later) == pytest.approx(oracle(first, later))
    continued = stats.from_row(row)
    for ts, kind in rest:
        stats.add(continued, ts, stats.kind_index(kind, BEHAVIORS))
    end = max(e[0] for e in events) + 1
    assert stats.at(continued, end) == pytest.approx(oracle(events, end))
    assert stats.to_row(continued, end) == stats.to_row(state_of(events), end)


def test_taking_back_a_copy_moves_its_counts_to_the_replacement():
    """The stream counts an event's first copy, then a greater copy replaces it (-1 old, +1 new)."""
    base = [(T0 + i * 10 * MIN, "impression") for i in range(20)]
    s = state_of(base + [(T0, "click")])
    stats.add(s, T0, stats.kind_index("click", BEHAVIORS), sign=-1)
    stats.add(s, T0 + 5 * HOUR, stats.kind_index("view", BEHAVIORS))
    expected = state_of(base + [(T0 + 5 * HOUR, "view")])
    assert stats.to_row(s, T0 + 6 * HOUR) == stats.to_row(expected, T0 + 6 * HOUR)
    # A copy whose tile was pruned long ago changes only the lifetime counts.
    old = state_of([(T0, "click"), (T0 + 9 * DAY, "click")])
    stats.add(old, T0, stats.kind_index("click", BEHAVIORS), sign=-1)
    assert stats.at(old, T0 + 9 * DAY + 1)["clicks_life"] == 1 and all(min(c) >= 0 for c in old.tiles.values())


@pytest.mark.parametrize("seed", range(3))
def test_batch_state_columns_equal_the_streamed_rows(seed):
    """features.offline.latest_stats (vectorized, as of T) holds, per key, the row the state
    algebra gives after every event before T."""
    import pyarrow as pa

    from features.offline import latest_stats

    rng = random.Random(seed)
    rows = [(k, *e) for k in (1, 2, 7, 8) for e in make_events(rng, rng.randrange(1, 120), 10 * DAY)]
    rows.append((11, T0 + 20 * DAY, "click"))  # only after as_of: zero counts, no state
    as_of = T0 + 10 * DAY - rng.randrange(0, 2 * DAY)
    table = pa.table({"user_id": [r[0] for r in rows], "timestamp": [r[1] for r in rows],
                      "event_type": [r[2] for r in rows]})
    got = {r["user_id"]: r for r in latest_stats(table, "user_id", as_of).to_pylist()}
    for key in (1, 2, 7, 8, 11):
        before = [(ts, kind) for k, ts, kind in rows if k == key and ts < as_of]
        if not before:
            assert got[key]["newest_ms"] == 0 and got[key]["tile_starts"] == [] and got[key]["behaviors_life"] == 0
            continue
        expected = stats.to_row(state_of(before), as_of)
        values = {n: got[key][n] for n in stats.feature_names()}
        assert values == pytest.approx({n: expected[n] for n in stats.feature_names()}), key
        assert {n: got[key][n] for n in stats.STATE_FIELDS} == {n: expected[n] for n in stats.STATE_FIELDS}, key


@pytest.mark.parametrize("seed", range(5))
def test_no_tile_counts_nothing_and_the_row_lists_every_live_tile(seed):
    """state_row skips no tile check: add, merge and from_row never keep a tile of zeros. Counts
    and take-backs (even of copies whose tiles were pruned) in any order; the row's tiles are the
    live ones with a count, in start order."""
    rng = random.Random(seed)
    s, added = stats.empty(), []
    for ts, kind in make_events(rng, 400, 12 * DAY):
        kinds = stats.kind_index(kind, BEHAVIORS)
        if added and rng.random() < 0.3:
            stats.add(s, *added.pop(rng.randrange(len(added))), sign=-1)
        else:
            stats.add(s, ts, kinds)
            added.append((ts, kinds))
        assert all(any(tile) for tile in s.tiles.values())
    low = stats.horizon(s.newest_ms)
    live = sorted(start for start, tile in s.tiles.items() if start >= low)
    row = stats.state_row(s)
    assert row["tile_starts"] == live and row["tile_counts"] == [c for start in live for c in s.tiles[start]]
    zeros = {**row, "tile_starts": [T0, *row["tile_starts"]], "tile_counts": [0, 0, 0, *row["tile_counts"]]}
    assert T0 not in stats.from_row(zeros).tiles
    negated = stats.from_row({**row, "tile_counts": [-c for c in row["tile_counts"]]})
    assert stats.merge([stats.from_row(row), negated]).tiles == {}


def test_a_state_pickled_with_a_tiles_dict_loads_as_the_same_state():
    """Checkpoints of the job before the tile arrays hold StatsState objects with a ``tiles`` dict."""
    import copyreg
    import io
    import pickle

    rng = random.Random(3)
    new = state_of(make_events(rng, 200, 9 * DAY))
    old = stats.StatsState.__new__(stats.StatsState)
    arrival = dict(reversed([*new.tiles.items(), (T0 - DAY, [0, 0, 0])]))  # a dict in arrival order, not sorted
    old.__dict__.update(lifetime=list(new.lifetime), tiles=arrival, newest_ms=new.newest_ms,
                        pruned_size=new.pruned_size)

    class OldPickler(pickle.Pickler):  # the old default: the class and its __dict__
        def reducer_override(self, obj):
            if type(obj) is stats.StatsState:
                return copyreg.__newobj__, (stats.StatsState,), obj.__dict__
            return NotImplemented

    def old_pickle(state) -> bytes:
        out = io.BytesIO()
        OldPickler(out).dump(state)
        return out.getvalue()

    loaded = pickle.loads(old_pickle(old))
    assert stats.state_row(loaded) == stats.state_row(new) and loaded.tiles == new.tiles
    assert pickle.loads(old_pickle(new)) == new  # the arrays, pickled with the field names (before the compact form)
    assert stats.to_row(loaded, new.newest_ms + 1) == stats.to_row(new, new.newest_ms + 1)


def test_a_row_in_any_tile_order_with_a_repeated_start_reads_as_the_dict_did():
    """from_row sorts the tiles, and of a repeated start keeps the last (as a dict built from the row would)."""
    row = {"newest_ms": T0 + 3 * MIN, "tile_starts": [T0 + 2 * MIN, T0, T0 + 2 * MIN, T0 + MIN],
           "tile_counts": [1, 0, 0, 0, 1, 1, 5, 5, 5, 0, 0, 1], "impressions_life": 9, "clicks_life": 9,
           "behaviors_life": 9}
    state = stats.from_row(row)
    assert state.tiles == {T0: [0, 1, 1], T0 + MIN: [0, 0, 1], T0 + 2 * MIN: [5, 5, 5]}
    assert list(state.starts) == [T0, T0 + MIN, T0 + 2 * MIN]
    for no_tiles in ([], None):  # a row whose tiles have all aged out, or a row without them
        empty = stats.from_row({**row, "tile_starts": no_tiles, "tile_counts": no_tiles})
        assert empty.tiles == {} and stats.at(empty, row["newest_ms"] + 1)["impressions_life"] == 9
    one = stats.from_row({**row, "tile_starts": [T0], "tile_counts": [0, 2, 0]})
    assert one.tiles == {T0: [0, 2, 0]}


@pytest.mark.parametrize("edge", [-1, 0, 1])
def test_a_window_counts_a_tile_that_starts_exactly_at_its_edge(edge):
    """Reads at the edges of every window, where now - window is a tile start, or 1 ms either side."""
    events = [(T0 + i * MIN, kind) for i, kind in enumerate(["impression", "click", "view"] * 40)]
    events += [(T0 + DAY + i * HOUR, "click") for i in range(30)]
    for length in (HOUR, DAY, 7 * DAY):
        for start in (T0, T0 + 7 * MIN, T0 + DAY + 3 * HOUR):
            now = start + length + edge
            before = [e for e in events if e[0] < now]  # a state is read after its newest event
            assert stats.at(state_of(before), now) == pytest.approx(oracle(before, now)), (length, start)


def test_a_pickled_state_loads_equal_and_carries_no_field_names():
    """Each key's Flink state is a pickle: the arrays' bytes, without the dataclass's field names."""
    import pickle

    rng = random.Random(5)
    state = state_of(make_events(rng, 300, 9 * DAY))
    blob = pickle.dumps(state)
    loaded = pickle.loads(blob)
    assert loaded == state and loaded.tiles == state.tiles and b"lifetime" not in blob
    stats.add(loaded, state.newest_ms + MIN, (0, 1))  # a loaded state goes on counting, apart from the original
    assert loaded.lifetime == [a + b for a, b in zip(state.lifetime, (1, 1, 0))] and loaded.starts != state.starts
    assert pickle.loads(pickle.dumps(stats.empty())) == stats.empty()
