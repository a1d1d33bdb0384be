"""parse_event: every rejection reason from a crafted record, every accepted form, and no raising on garbage."""
from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import NOW_MS, T0
from features.ids import stable_id
from features.schema import Event, Rejection
from features.validate import MAX_FIELD_CHARS, MAX_FUTURE_MS, MAX_RECORD_BYTES, MIN_TIMESTAMP_MS, REASONS, parse_event

GOOD = {"event_id": "ev-1", "user_id": "u1", "item_id": 17, "event_type": "click", "timestamp": T0,
        "category_id": "c3", "value": 4.5, "request_id": "r9", "position": 2}

# Three raw forms of one record: a mapping, a JSON line, the JSON line's UTF-8 bytes.
FORMS = {"dict": lambda rec: rec, "str": json.dumps, "bytes": lambda rec: json.dumps(rec).encode("utf-8")}


def with_(**changes) -> dict:
    rec = dict(GOOD)
    for name, value in changes.items():
        if value is _DROP:
            del rec[name]
        else:
            rec[name] = value
    return rec


_DROP = object()

# (record, reason, field): one crafted record per (reason, field) that a JSON-representable record can hit.
CRAFTED = [
    (with_(event_id=_DROP), "missing_field", "event_id"),
    (with_(user_id=None), "missing_field", "user_id"),
    (with_(item_id=""), "missing_field", "item_id"),
    (with_(event_type=_DROP), "missing_field", "event_type"),
    (with_(timestamp=None), "missing_field", "timestamp"),
    (with_(event_id=["a"]), "wrong_type", "event_id"),
    (with_(event_id=1.5), "wrong_type", "event_id"),
    (with_(user_id=[1, 2]), "wrong_type", "user_id"),
    (with_(user_id=True), "wrong_type", "user_id"),
    (with_(item_id={"id": 3}), "wrong_type", "item_id"),
    (with_(item_id=3.25), "wrong_type", "item_id"),
    (with_(event_type=7.5), "wrong_type", "event_type"),
    (with_(timestamp="yesterday"), "wrong_type", "timestamp"),
    (with_(timestamp=T0 + 0.5), "wrong_type", "timestamp"),
    (with_(timestamp=True), "wrong_type", "timestamp"),
    (with_(timestamp=[T0]), "wrong_type", "timestamp"),
    (with_(category_id=[3]), "wrong_type", "category_id"),
    (with_(value="high"), "wrong_type", "value"),
    (with_(value=False), "wrong_type", "value"),
    (with_(request_id=2.5), "wrong_type", "request_id"),
    (with_(position=1.5), "wrong_type", "position"),
    (with_(position="3"), "wrong_type", "position"),
    (with_(position=2**31), "wrong_type", "position"),  # the event schema stores positions as int32
    (with_(event_id="x" * (MAX_FIELD_CHARS + 1)), "field_too_large", "event_id"),
    (with_(user_id="u" * (MAX_FIELD_CHARS + 1)), "field_too_large", "user_id"),
    (with_(request_id="r" * (MAX_FIELD_CHARS + 1)), "field_too_large", "request_id"),
    (with_(event_type="teleport"), "unknown_event_type", "event_type"),
    (with_(event_type="Click"), "unknown_event_type", "event_type"),
    (with_(timestamp=T0 // 1000), "timestamp_too_old", "timestamp"),  # seconds, not milliseconds
    (with_(timestamp=MIN_TIMESTAMP_MS - 1), "timestamp_too_old", "timestamp"),
    (with_(timestamp="1989-12-31T23:59:59.999Z"), "timestamp_too_old", "timestamp"),
    (with_(timestamp=NOW_MS + MAX_FUTURE_MS + 1), "timestamp_in_future", "timestamp"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("record,reason,field", CRAFTED, ids=[f"{r}-{f}" for _, r, f in CRAFTED])
def test_crafted_record_is_rejected_with_reason_and_field(record, reason, field, form):
    raw = FORMS[form](record)
    result = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(result, Rejection), result
    assert (result.reason, result.field) == (reason, field), result.detail
    assert result.reason in REASONS and result.detail
    assert result.raw == (raw.decode() if isinstance(raw, bytes) else raw if isinstance(raw, str) else json.dumps(raw))


@pytest.mark.parametrize("raw,reason", [
    (b'{"event_id": "\xff\xfe"}', "not_utf8"),
    (b"\xc3\x28", "not_utf8"),
    ('{"event_id": "ev-1", "user_id": ', "malformed_json"),
    (b"", "malformed_json"),
    ("{'event_id': 'single quotes'}", "malformed_json"),
    ("[1, 2, 3]", "not_an_object"),
    (b"42", "not_an_object"),
    ('"a string"', "not_an_object"),
    (None, "not_an_object"),
    ([GOOD], "not_an_object"),
    (b" " * (MAX_RECORD_BYTES + 1), "record_too_large"),
    (json.dumps(with_(value=1.0)).replace("1.0", "1." + "0" * MAX_RECORD_BYTES), "record_too_large"),
])
def test_record_level_rejections_name_no_field(raw, reason):
    result = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (reason, None)
    assert isinstance(result.raw, str)


def test_lone_surrogate_in_a_field_is_not_utf8_for_that_field():
    for raw in (with_(request_id="ok\ud800"), json.dumps(with_(request_id="ok\ud800"))):  # json escapes it as \\ud800
        result = parse_event(raw, now_ms=NOW_MS)
        assert (result.reason, result.field) == ("not_utf8", "request_id")


def test_every_reason_but_late_is_produced():
    produced = {reason for _, reason, _ in CRAFTED} | {"not_utf8", "malformed_json", "not_an_object", "record_too_large"}
    assert produced == set(REASONS) - {"late"}


def test_bytes_rejection_keeps_undecodable_bytes_visible():
    result = parse_event(b'{"user_id": "\xff"}', now_ms=NOW_MS)
    assert result.reason == "not_utf8" and "\\xff" in result.raw


# --- accepted forms -------------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_valid_record_maps_every_field(form):
    event = parse_event(FORMS[form](GOOD), now_ms=NOW_MS)
    assert event == Event(event_id="ev-1", user_id=stable_id("u1"), item_id=stable_id("17"), event_type="click",
                          timestamp=T0, category_id=stable_id("c3"), value=4.5, request_id="r9", position=2)


def test_optional_fields_may_be_absent_or_null():
    minimal = {k: GOOD[k] for k in ("event_id", "user_id", "item_id", "event_type", "timestamp")}
    for rec in (minimal, {**minimal, "category_id": None, "value": None, "request_id": None, "position": None},
                {**minimal, "category_id": ""}):
        event = parse_event(rec, now_ms=NOW_MS)
        assert isinstance(event, Event)
        assert (event.category_id, event.value, event.request_id, event.position) == (None, None, None, None)


def test_id_forms_map_equal():
    """42, "42" and 42.0 are one ID in every ID field; "042" and "a" are others."""
    def ids(value):
        e = parse_event(with_(user_id=value, item_id=value, category_id=value), now_ms=NOW_MS)
        return e.user_id, e.item_id, e.category_id

    assert ids(42) == ids("42") == ids(42.0) == (stable_id("42"),) * 3
    assert ids("042")[0] != ids(42)[0]
    assert len({ids(v)[0] for v in (1, 2, "a", "b", -1)}) == 5


def test_integer_event_id_request_id_and_number_forms():
    e = parse_event(with_(event_id=123, request_id=9, value=3, position=4.0), now_ms=NOW_MS)
    assert (e.event_id, e.request_id, e.value, e.position) == ("123", "9", 3.0, 4)
    assert type(e.value) is float and type(e.position) is int


def test_timestamp_forms_agree():
    dt = datetime(2024, 3, 5, 6, 7, 8, 9000, tzinfo=timezone.utc)
    ms = ((dt.date() - datetime(1970, 1, 1).date()).days * 86400 + 6 * 3600 + 7 * 60 + 8) * 1000 + 9
    for value in (ms, float(ms), "2024-03-05T06:07:08.009Z", "2024-03-05T06:07:08.009+00:00",
                  "2024-03-05T08:07:08.009+02:00", "2024-03-05T06:07:08.009"):  # no zone: UTC assumed
        assert parse_event(with_(timestamp=value), now_ms=NOW_MS).timestamp == ms, value


def test_iso_timestamps_are_exact_to_the_millisecond():
    """The ISO path must give the same integer ms as the integer form, for every ms value."""
    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for _ in range(3000):
        ms = rng.randrange(MIN_TIMESTAMP_MS, NOW_MS)
        iso = (epoch + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert parse_event(with_(timestamp=iso), now_ms=NOW_MS).timestamp == ms, iso


def test_timestamp_bounds_are_inclusive():
    assert isinstance(parse_event(with_(timestamp=MIN_TIMESTAMP_MS), now_ms=NOW_MS), Event)
    assert isinstance(parse_event(with_(timestamp=NOW_MS + MAX_FUTURE_MS), now_ms=NOW_MS), Event)


def test_now_ms_is_the_clock():
    ts = T0 + 10 * MAX_FUTURE_MS
    assert isinstance(parse_event(with_(timestamp=ts), now_ms=ts - MAX_FUTURE_MS), Event)
    assert parse_event(with_(timestamp=ts), now_ms=ts - MAX_FUTURE_MS - 1).reason == "timestamp_in_future"
    assert parse_event(with_(timestamp=T0), now_ms=T0 - MAX_FUTURE_MS - 1).reason == "timestamp_in_future"
    # Without now_ms the wall clock decides.
    wall = int(time.time() * 1000)
    assert isinstance(parse_event(with_(timestamp=wall)), Event)
    assert parse_event(with_(timestamp=wall + 2 * MAX_FUTURE_MS)).reason == "timestamp_in_future"


def test_field_size_limit_is_inclusive():
    assert isinstance(parse_event(with_(event_id="x" * MAX_FIELD_CHARS), now_ms=NOW_MS), Event)


# --- garbage never raises ---------------------------------------------------------------------

def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, T0, 2**63, -(2**70), 10**400, rng.randrange(-10**12, 10**12)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"), T0 + 0.25, float(T0)])
    if kind == 4:
        return rng.choice(["", "click", "impression", "2024-01-01T00:00:00Z", "9999-99-99", "\ud800", "x" * 2000,
                           "".join(chr(rng.randrange(0x10FFFF)) for _ in range(rng.randrange(6)))])
    if kind == 5:
        return rng.choice(["event_id", "user_id", "item_id", "timestamp", "position", "value"])
    if kind == 6:
        return rng.randrange(1_000_000)
    if kind == 7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["event_id", "user_id", "item_id", "event_type", "timestamp", "category_id", "value", "request_id",
            "position", "other"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(8))}


def _assert_handled(raw):
    result = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(result, (Event, Rejection))
    if isinstance(result, Rejection):
        assert result.reason in REASONS and isinstance(result.raw, str) and isinstance(result.detail, str)


def test_random_bytes_never_raise():
    rng = random.Random(1)
    for _ in range(400):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        _assert_handled(raw)
        _assert_handled(raw.decode("latin-1"))


def test_random_structures_never_raise():
    rng = random.Random(2)
    for _ in range(400):
        value = _random_value(rng)
        _assert_handled(value)
        try:
            line = json.dumps(value)
        except ValueError:  # an int too long to print
            continue
        _assert_handled(line)
        _assert_handled(line.encode("utf-8", errors="surrogatepass"))


def test_valid_record_with_one_field_garbled_never_raises():
    rng = random.Random(3)
    for _ in range(600):
        rec = dict(GOOD)
        rec[rng.choice(list(GOOD) + ["extra"])] = _random_value(rng)
        _assert_handled(rec)
        try:
            _assert_handled(json.dumps(rec))
        except ValueError:
            pass


@pytest.mark.parametrize("raw", [
    "[" * 60_000,                                    # nesting deeper than the JSON decoder's recursion limit
    b'{"a":' * 10_000,
    json.dumps(GOOD)[:-1] + ', "value": ' + "9" * 400 + "}",   # an int beyond the float range
    json.dumps(GOOD)[:-1] + ', "position": NaN}',
    json.dumps(GOOD)[:-1] + ', "position": Infinity}',
    with_(user_id=10**5000),                         # more digits than int -> str allows
    with_(value=10**5000),
    with_(position=10**5000),
    ["x"] * 5 + [10**5000],                          # unprintable raw record
])
def test_pathological_inputs_are_rejections(raw):
    result = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(result, Rejection) and result.reason in REASONS and isinstance(result.raw, str)


def test_unprintable_extra_field_does_not_stop_a_valid_event():
    assert parse_event(with_(other=10**5000), now_ms=NOW_MS).item_id == stable_id(17)
