"""The synthetic generator: deterministic, planted structure really there, corruptions rejected."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from features.schema import Event, Rejection
from features.validate import parse_event
from pipelines.sources.synthetic import HOUR_MS, SyntheticConfig, SyntheticStream

CFG = SyntheticConfig(users=60, items=400, categories=12, days=4, sessions_per_user=16, seed=3)
END_MS = CFG.start_ms + CFG.days * 24 * HOUR_MS


def collect(cfg):
    stream = SyntheticStream(cfg)
    windows = list(stream.windows())
    return stream, [lines for lines, _ in windows], [row for _, truth in windows for row in truth]


@pytest.fixture(scope="module")
def generated():
    return collect(CFG)


def test_same_seed_same_stream_other_seed_another(generated):
    stream, windows, truth = generated
    again_stream, again_windows, again_truth = collect(CFG)
    assert again_windows == windows and again_truth == truth
    assert again_stream.catalog().equals(stream.catalog())
    _, other, _ = collect(SyntheticConfig(**{**CFG.__dict__, "seed": 4}))
    assert other != windows


def test_one_window_per_hour_in_time_order(generated):
    _, windows, _ = generated
    assert len(windows) == CFG.days * 24
    for hour, lines in enumerate(windows):
        t0 = CFG.start_ms + hour * HOUR_MS
        for row in map(json.loads, lines):
            if row["event_type"] == "impression":  # sessions start inside their hour
                assert t0 <= row["timestamp"] < t0 + HOUR_MS
            else:  # clicks follow within 2 minutes, buys a minute later: they may spill into the next hour
                assert t0 < row["timestamp"] < t0 + HOUR_MS + 3 * 60_000
    starts = [min(json.loads(x)["timestamp"] for x in lines) for lines in windows if lines]
    assert starts == sorted(starts)


def test_events_are_valid_and_ids_unique(generated):
    _, windows, _ = generated
    lines = [x for w in windows for x in w]
    parsed = [parse_event(x, now_ms=END_MS) for x in lines]
    assert all(isinstance(e, Event) for e in parsed)
    assert len({e.event_id for e in parsed}) == len(parsed) > 5_000
    kinds = Counter(e.event_type for e in parsed)
    assert kinds["impression"] == CFG.slate_size * len({json.loads(x)["request_id"] for x in lines})
    assert 0 < kinds["buy"] < kinds["click"] < kinds["impression"]


def test_ground_truth_covers_every_user_from_the_start(generated):
    stream, windows, truth = generated
    first = [row for row in truth if row["from_ms"] == CFG.start_ms]
    assert sorted(row["user_id"] for row in first) == list(range(CFG.users))
    for row in truth:
        assert len(set(row["interests"])) == CFG.interests_per_user
        assert all(0 <= c < CFG.categories for c in row["interests"])
    assert len(truth) > CFG.users  # interests drift: later rows exist


def interests_at(by_user, user, ts):
    """The user's interests from the last truth row at or before ts."""
    return set(max((r for r in by_user[user] if r["from_ms"] <= ts), key=lambda r: r["from_ms"])["interests"])


def test_clicks_follow_the_planted_interests(generated):
    """Click rate on impressions inside the user's current interests is far above the rate outside."""
    _, windows, truth = generated
    rows = [json.loads(x) for w in windows for x in w]
    clicked = {(r["request_id"], r["position"]) for r in rows if r["event_type"] == "click"}
    by_user = {}
    for r in truth:
        by_user.setdefault(r["user_id"], []).append(r)
    shown = Counter()
    hits = Counter()
    for r in rows:
        if r["event_type"] == "impression":
            inside = r["category_id"] in interests_at(by_user, r["user_id"], r["timestamp"])
            shown[inside] += 1
            hits[inside] += (r["request_id"], r["position"]) in clicked
    assert min(shown.values()) > 1_000
    rate_in, rate_out = hits[True] / shown[True], hits[False] / shown[False]
    assert rate_in > 2.5 * rate_out, (rate_in, rate_out)
    # Each click is on an item of its slate: same request, position, item.
    slate = {(r["request_id"], r["position"]): r["item_id"] for r in rows if r["event_type"] == "impression"}
    assert all(slate[(r["request_id"], r["position"])] == r["item_id"] for r in rows if r["event_type"] != "impression")


def test_catalog_matches_events(generated):
    stream, windows, _ = generated
    catalog = stream.catalog()
    assert catalog.num_rows == CFG.items and catalog.column("item_id").to_pylist() == list(range(CFG.items))
    category = dict(zip(catalog.column("item_id").to_pylist(), catalog.column("category_id").to_pylist()))
    for row in (json.loads(x) for x in windows[5] + windows[50]):
        assert category[row["item_id"]] == row["category_id"]


def test_bad_fraction_produces_rejections():
    cfg = SyntheticConfig(**{**CFG.__dict__, "bad_fraction": 0.2, "days": 2})
    _, windows, _ = collect(cfg)
    parsed = [parse_event(x, now_ms=END_MS) for w in windows for x in w]
    rejected = Counter(r.reason for r in parsed if isinstance(r, Rejection))
    assert 0.15 < sum(rejected.values()) / len(parsed) < 0.25
    assert set(rejected) == {"malformed_json", "missing_field", "unknown_event_type", "timestamp_too_old",
                             "wrong_type"}


def test_config_validation():
    for bad in ({"users": 0}, {"interests_per_user": 13}, {"bad_fraction": 1.0}, {"bad_fraction": -0.1}):
        with pytest.raises(ValueError):
            SyntheticConfig(**{**CFG.__dict__, **bad})
