"""parse_lines (the vectorized fast path) gives exactly what parse_event gives, line by line, on
adversarial and randomized input; and it decides clean lines itself."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.conftest import NOW_MS, T0
from features.schema import Event, table_to_events
from features.validate import MAX_FIELD_CHARS, MAX_FUTURE_MS, MAX_RECORD_BYTES, MIN_TIMESTAMP_MS, parse_event
from features.json_lines import screen
from features.validate_arrow import LEAF_LINES, parse_lines
from tests.features.test_validate import CRAFTED, GOOD, with_


def assert_same(lines, now_ms=NOW_MS, chunk=None):
    """parse_lines over the lines (in chunks) equals parse_event on each line: events and rejections, in order."""
    chunk = chunk or max(len(lines), 1)
    expected = [parse_event(x, now_ms) for x in lines]
    events, rejections, fast = [], [], 0
    for i in range(0, len(lines), chunk):
        got = parse_lines(lines[i:i + chunk], now_ms)
        events += table_to_events(got.events)
        rejections += got.rejections
        fast += got.fast
    assert rejections == [r for r in expected if not isinstance(r, Event)]
    want = [e for e in expected if isinstance(e, Event)]
    assert len(events) == len(want)
    for got_event, want_event in zip(events, want):
        assert got_event == want_event and [type(v) for v in got_event] == [type(v) for v in want_event]
    return fast


def line(rec, **kw) -> bytes:
    return json.dumps(rec, **kw).encode("utf-8")


def test_crafted_rejections_and_the_good_record_in_every_form():
    lines = []
    for rec, _, _ in CRAFTED:
        lines += [line(rec), json.dumps(rec), line(rec, separators=(",", ":")), line(rec, indent=None) + b" "]
    good = [line(GOOD), json.dumps(GOOD), line(GOOD, separators=(",", ":")), line(dict(reversed(GOOD.items())))]
    assert_same(lines + good)
    assert assert_same(good) == len(good)  # decided by the fast path


def raw_variants() -> list:
    """Lines aimed at every difference between Python's and Arrow's JSON readers, and at every check."""
    good = line(GOOD)[:-1]  # without the closing brace: append fields, then "}"
    body = good[1:]
    out = [
        b"", b" ", b"{}", b"{ }", b"[]", b"null", b"42", b'"x"', b"{", b"}", b"}{", b"\xef\xbb\xbf" + line(GOOD),
        line(GOOD) + b"\r", line(GOOD).replace(b", ", b",\t"), line(GOOD) + line(GOOD), line(GOOD) + b" " + line(GOOD),
        line(GOOD) + b" x", good + b",}", good + b", }", b"{ " + body + b"}", b"{" + body + b" }",
        good + b', "other": NaN}', good + b', "other": Infinity}', good + b', "other": -Infinity}',
        good + b', "other": Inf}', good + b', "other": -Inf}', good + b', "other": -NaN}', good + b', "value": NaN}',
        good + b', "other": [1, [2]]}', good + b', "other": {"a": 1}}', good + b', "other": "{[]}"}',
        good + b', "other": ' + b"[" * 3000 + b"]" * 3000 + b"}", good + b', "other": 1e400}',
        good + b', "value": 1e400}', good + b', "value": -1e400}', good + b', "value": 1e308}',
        good + b', "other": 01}', good + b', "other": 1.}', good + b', "other": .5}', good + b', "other": +1}',
        good + b', "other": True}', good + b', "other": nul}', good + b", 'other': 1}", good + b", other: 1}",
        good + b', "other" 1}', good + b', "other":: 1}', good + b', , "other": 1}', good + b' "other": 1}',
        good + b', "": 1}', good + b', "a/b": 1}', good + b', "user_id": "dup"}', good + b', "event_type": "view"}',
        good + b', "timestamp": "2024-01-01"}', good + b', "other": "2024-01-01"}', good + b', "other": \x7f}',
        good + b', "other": "\x7f"}', good + b', "other": "a\x00b"}', good + b', "other": "\xc3\xa9"}',
        good + b', "other": "\xff"}', good + b', "other": "\\u00e9"}', good + b', "other": "\\ud800"}',
        good + b', "other": "\\"}"}', good + b', "request_id": "caf\xc3\xa9"}',
        good + b', "request_id": "\\ud83d\\ude00"}',
        good + b', "other": 123456789012345678901234567890}', good + b', "other": "x"}' + b" " * MAX_RECORD_BYTES,
        line(with_(value=1.0)).replace(b"1.0", b"1." + b"0" * MAX_RECORD_BYTES),
        b'{"event_id": "a", "user_id": 1, "item_id": 2, "event_type": "click", "timestamp": ' + str(T0).encode() + b"}",
        "{\"event_id\": \"\u00e9\", \"user_id\": 1, \"item_id\": 2, \"event_type\": \"click\", \"timestamp\": 1}",
        json.dumps(with_(request_id="ok\ud800")), json.dumps(with_(request_id="ok\ud800"), ensure_ascii=False),
        json.dumps(with_(user_id="\u00fcser"), ensure_ascii=False), json.dumps(with_(user_id="\u00fcser")).encode(),
        GOOD, [GOOD], None, 42,
    ]
    return out


def test_raw_variants():
    assert_same(raw_variants())


# Field values that sit on each side of a check, as JSON literals.
EDGE_VALUES = {
    "ids": ["0", "-0", "1", "-1", "42", "42.0", "4.2e1", "1e2", "1.5", "9223372036854775807", "9223372036854775808",
            "-9223372036854775809", "123456789012345678901234567890", '""', '" "', '"42"', '"042"', '"a"',
            '"2024-01-01"', '"2024-01-01T00:00:00Z"', '"' + "x" * MAX_FIELD_CHARS + '"',
            '"' + "x" * (MAX_FIELD_CHARS + 1) + '"', "true", "false", "null", '"a,b"', '"a:b"', '"a b"', '"{"'],
    "event_type": ['"click"', '"impression"', '"rate"', '"Click"', '"teleport"', '""', "1", "null", "true", '"buy"'],
    "timestamp": [str(T0), str(T0) + ".0", str(T0) + ".5", "1.7040672e12", str(MIN_TIMESTAMP_MS),
                  str(MIN_TIMESTAMP_MS - 1), str(NOW_MS + MAX_FUTURE_MS), str(NOW_MS + MAX_FUTURE_MS + 1),
                  str(T0 // 1000), "-1", "0", '"2024-03-05T06:07:08.009Z"', '"2024-03-05T08:07:08.009+02:00"',
                  '"2024-03-05T06:07:08.009"', '"2024-03-05"', '"2024-03-05 06:07:08"', '"1989-12-31T23:59:59.999Z"',
                  '"yesterday"', '""', '"' + str(T0) + '"', "true", "null", "9223372036854775808"],
    "value": ["0", "-0", "-0.0", "4.5", "1e3", "1E-3", "5", "9007199254740993", "12345678901234567890",
              "1e308", "1.7976931348623157e308", "4.9e-324", "1" + "0" * 300, "9" * 400, "123456789" * 30,
              "0." + "3" * 500, '"4.5"', "true", "null", '""'],
    "position": ["0", "-1", "2", "2.0", "2.5", "2147483647", "2147483648", "-2147483648", "-2147483649", '"3"',
                 "true", "null", "1e2", '""'],
}
FIELD_KIND = {"event_id": "ids", "user_id": "ids", "item_id": "ids", "category_id": "ids", "request_id": "ids",
              "event_type": "event_type", "timestamp": "timestamp", "value": "value", "position": "position"}
BASE = {"event_id": '"e1"', "user_id": "7", "item_id": '"i9"', "event_type": '"click"', "timestamp": str(T0),
        "category_id": "3", "value": "1.5", "request_id": '"r1"', "position": "1"}


def build(fields: dict, rng: random.Random) -> bytes:
    """A JSON object line from literal field values, with random spacing and key order."""
    items = list(fields.items())
    rng.shuffle(items)
    sp = lambda: rng.choice(["", " ", "  "])  # noqa: E731
    members = [f'{sp()}"{k}"{sp()}:{sp()}{v}{sp()}' for k, v in items]
    return ("{" + ",".join(members) + "}").encode()


def test_every_edge_value_of_every_field_alone():
    rng = random.Random(0)
    lines = [build(BASE, rng)]
    for name, kind in FIELD_KIND.items():
        for literal in EDGE_VALUES[kind]:
            lines.append(build({**BASE, name: literal}, rng))
        lines.append(build({k: v for k, v in BASE.items() if k != name}, rng))  # absent
    assert assert_same(lines) > 0
    # The same lines one at a time: no other line shares a column, so Arrow infers each type alone.
    for x in lines:
        assert_same([x])


def random_line(rng: random.Random) -> bytes:
    """Mostly valid records with a few fields from the edge lists, duplicate keys, extra fields,
    and one in five lines broken at the byte level."""
    fields = {k: v for k, v in BASE.items() if rng.random() < 0.95}
    for name in rng.sample(list(FIELD_KIND), rng.choice([0, 0, 1, 2])):
        fields[name] = rng.choice(EDGE_VALUES[FIELD_KIND[name]])
    fields["event_id"] = f'"e{rng.randrange(10**6)}"' if rng.random() < 0.9 else fields.get("event_id", "1")
    if rng.random() < 0.1:
        fields["other"] = rng.choice(["1", '"x"', "null", "[1]", '{"a": 2}', "NaN", "1.5", "true", '"2024-01-01"'])
    raw = build(fields, rng)
    if rng.random() < 0.05:  # a duplicate key
        name = rng.choice(list(FIELD_KIND))
        raw = raw[:-1] + f', "{name}": {rng.choice(EDGE_VALUES[FIELD_KIND[name]])}}}'.encode()
    if rng.random() < 0.2:
        pos = rng.randrange(len(raw) + 1)
        junk = rng.choice([b"", b",", b":", b'"', b"}", b"{", b" ", b"x", b"0", b".", b"-", b"e", b"\xff", b"\t",
                           b"\\"])
        raw = raw[:pos] + junk + raw[pos + rng.randrange(0, 2):]
    return raw


@pytest.mark.parametrize("seed", range(6))
def test_randomized_mix_equals_parse_event(seed):
    """A dense mix: about half the lines are odd somewhere."""
    rng = random.Random(seed)
    assert_same([random_line(rng) for _ in range(1500)], chunk=rng.choice([7, 100, 1500]))


@pytest.mark.parametrize("seed", range(3))
def test_realistic_mix_is_mostly_decided_fast(seed):
    """Clean lines with 2% odd ones: the odd ones cost their block a few re-reads, not the fast path."""
    rng = random.Random(seed)
    lines = [build({**BASE, "event_id": f'"e{i}"', "user_id": str(rng.randrange(50))}, rng) for i in range(2000)]
    for at in rng.sample(range(len(lines)), 40):
        lines[at] = random_line(rng)
    accepted = sum(isinstance(parse_event(x, NOW_MS), Event) for x in lines)
    assert assert_same(lines) >= accepted - 40 * LEAF_LINES


def test_clean_lines_are_all_decided_fast_also_when_types_are_mixed():
    rng = random.Random(4)
    clean = [build({**BASE, "event_id": f'"e{i}"', "user_id": str(rng.randrange(50))}, rng) for i in range(300)]
    assert assert_same(clean) == len(clean)
    # Lines whose field types differ from the rest: Arrow refuses the block, which is split by value kind.
    mixed = clean[:]
    for at in range(0, 300, 7):
        mixed[at] = build({**BASE, "timestamp": '"2024-01-02T00:00:00Z"', "user_id": '"u"', "position": "2.0"}, rng)
    assert assert_same(mixed) == len(mixed)  # position 2.0 makes the column doubles: integral ones are still ints


def test_wall_clock_when_no_now_is_given():
    far = line(with_(timestamp=T0 + 100 * 365 * 86_400_000))
    got = parse_lines([line(GOOD), far])
    assert got.events.num_rows == 1 and [r.reason for r in got.rejections] == ["timestamp_in_future"]


def test_screen_rejects_what_the_readers_may_disagree_on():
    ok = line(GOOD)
    lines = [ok, ok + b" ", ok[:-1] + b', "x": [1]}', ok[:-1] + b', "x": "\\n"}', ok[:-1] + b', "x": "\xc3\xa9"}',
             ok[:-1] + b', "x": NaN}', ok + ok, b"{}", b""]
    assert screen(lines).tolist() == [True, False, False, False, False, False, False, True, False]


def test_integer_id_table_equals_stable_id_and_restarts_at_its_limit():
    from features.ids import stable_id
    from features.validate_arrow import _IntIds

    ids, rng = _IntIds(limit=50), random.Random(5)
    pool = [rng.randrange(-10**15, 10**15) for _ in range(120)] + [0, -1, 2**63 - 1, -(2**63)]
    for _ in range(30):
        values = np.array([rng.choice(pool) for _ in range(rng.randrange(1, 40))], np.int64)
        assert ids.lookup(values).tolist() == [stable_id(int(v)) for v in values]
        assert len(ids.table[0]) <= 50


@pytest.mark.parametrize("block", [1, 3, 7, 1 << 20])
def test_line_blocks_split_like_iterating_the_file(block):
    import io

    from features.json_lines import line_blocks

    for data in (b"", b"\n", b"a", b"a\n", b"a\r\n\r\nb", b"{}\n\n[1]\r\r\n x \n", b"\r", b"a\nb\r", b"\n\n\n"):
        expected = [line.rstrip(b"\r\n") for line in io.BytesIO(data)]
        got = [line for lines in line_blocks(io.BytesIO(data), block) for line in lines]
        assert got == expected, (data, block)
