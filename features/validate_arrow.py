"""Vectorized parse + validate of a chunk of JSON lines: the fast path of validate.parse_event.

parse_lines(lines) gives exactly what [parse_event(x) for x in lines] gives (the same accepted
events in the same order, the same rejections), much faster. How it stays exact:

1. A byte screen (features.json_lines.screen) keeps only lines whose JSON reading cannot differ between Python's
   json module and Arrow's JSON reader: printable ASCII (so no escapes, no bad UTF-8, no
   control characters), no backslash, no brackets, one ``{`` first and one ``}`` last (one flat
   object), no ``NaN``/``Inf`` tokens, at most MAX_RECORD_BYTES.
2. Arrow's JSON reader parses those lines in one call. A block it refuses (a syntax error,
   a duplicate key, a field whose type changes between lines, a row count that is not the
   line count) is split: by the kind of value of the field whose type changed, or else in
   halves, down to LEAF_LINES lines.
3. Arrow compute decides, per line, whether parse_event would ACCEPT it, and builds the event
   columns (IDs hashed once per distinct value with ids.stable_id).
4. Every other line -- not screened in, not parsed, or not certainly accepted -- goes through
   parse_event itself. So every rejection, with its reason, detail and raw text, is
   parse_event's own; the fast path only ever accepts.

parse_table(table) does the same for raw events that come as an Arrow table (a Parquet file's
row groups): its columns are put in the JSON reader's types and go through step 3 as they are;
every row not certainly accepted goes to parse_event as the dict of its non-null fields (in
those same plain types), or as its JSON line where only a line shows the problem (a row over
MAX_RECORD_BYTES, a string that is not UTF-8), so each row gets what its JSON line gets.
event_columns(schema, file) checks such a table's schema first: a required column that is
absent, or a column of a type no event can have, is one InputError for the file; a column of
Arrow type null is read as absent in every row.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from features.errors import InputError
from features.ids import stable_id
from features.json_lines import screen
from features.schema import EVENT_SCHEMA, EVENT_TYPES, Event, Rejection, events_to_table
from features.validate import (MAX_FIELD_CHARS, MAX_FUTURE_MS, MAX_RECORD_BYTES, MIN_TIMESTAMP_MS, REQUIRED_FIELDS,
                               parse_event, timestamp_ms)

LEAF_LINES = 8  # a refused block this small goes line by line through parse_event


@dataclass
class ParsedLines:
    events: pa.Table  # EVENT_SCHEMA: the accepted lines, in input order
    rejections: list[Rejection]  # in input order
    fast: int  # lines accepted by the vectorized path (the rest went through parse_event)


def parse_lines(lines: Sequence[Any], now_ms: int | None = None) -> ParsedLines:
    """Validate a chunk of raw records (JSON lines as bytes or str; anything else goes to parse_event)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    as_bytes = lines if set(map(type, lines)) <= {bytes} else [_to_bytes(x) for x in lines]
    joined = b"\n".join(as_bytes) + b"\n"
    candidates = np.flatnonzero(screen(as_bytes, joined))
    if len(candidates) == len(as_bytes):  # every line screened in: Arrow reads the joined lines as they are
        blocks = _parse_blocks(as_bytes, candidates, joined)
    else:
        blocks = _parse_blocks(as_bytes, candidates)
    fast_idx, fast_tables = [], []
    for idx, table in blocks:
        ok, columns = accept(table, now)
        mask = pa.array(ok)
        fast_idx.append(idx[ok])
        fast_tables.append(pa.Table.from_arrays([c.filter(mask) for c in columns], schema=EVENT_SCHEMA))
    fast = np.concatenate(fast_idx) if fast_idx else np.empty(0, np.int64)
    rest = np.ones(len(lines), dtype=bool)
    rest[fast] = False
    slow_idx, slow_events, rejections = [], [], []
    for i in np.flatnonzero(rest).tolist():
        got = parse_event(lines[i], now)
        if isinstance(got, Event):
            slow_idx.append(i)
            slow_events.append(got)
        else:
            rejections.append(got)
    return _interleaved(fast, fast_tables, slow_idx, slow_events, rejections)


def _interleaved(fast: np.ndarray, fast_tables: list[pa.Table], slow_idx: list[int], slow_events: list[Event],
                 rejections: list[Rejection]) -> ParsedLines:
    """The fast path's and parse_event's accepted events back in input order (fast, slow_idx: their rows)."""
    if not slow_events and len(fast_tables) == 1:  # the common case: nothing to interleave
        return ParsedLines(fast_tables[0], rejections, len(fast))
    events = pa.concat_tables([*fast_tables, events_to_table(slow_events)])
    order = np.argsort(np.concatenate([fast, np.asarray(slow_idx, np.int64)]), kind="stable")
    return ParsedLines(events.take(pa.array(order)), rejections, len(fast))


def _to_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", errors="surrogatepass")  # non-ASCII (surrogates too) fails the screen
    return b""  # not a line: fails the screen, parse_event decides


def _parse_blocks(lines: list[bytes], idx: np.ndarray, joined: bytes | None = None):
    """(line indices, Arrow table) for the blocks of idx that Arrow reads, one row per line.
    A refused block is split by the kind of value (string, number, ...) of the field whose type
    changed, when that is the reason; otherwise in halves."""
    if len(idx) == 0:
        return
    buf = joined if joined is not None else b"\n".join([lines[i] for i in idx.tolist()])
    table, error = _read(buf, len(idx))
    if table is not None:
        yield idx, table
        return
    if len(idx) <= LEAF_LINES:
        return
    conflict = _TYPE_CHANGE.search(error)
    if conflict:
        kinds = _value_kinds([lines[i] for i in idx.tolist()], conflict.group(1))
        if len(set(kinds.tolist())) > 1:
            for kind in np.unique(kinds):
                yield from _parse_blocks(lines, idx[kinds == kind])
            return
    half = len(idx) // 2
    yield from _parse_blocks(lines, idx[:half])
    yield from _parse_blocks(lines, idx[half:])


_TYPE_CHANGE = re.compile(r"Column\(/(\w+)\) changed from")


def _value_kinds(lines: list[bytes], name: str) -> np.ndarray:
    """The first byte of each line's value of the field (b'"' string, a digit or '-' number, ...), 0 if absent."""
    find = re.compile(rb'"' + re.escape(name.encode()) + rb'"\s*:\s*(.)').search
    firsts = [m.group(1)[0] if m else 0 for m in map(find, lines)]
    kinds = np.array(firsts, dtype=np.uint8)
    kinds[np.isin(kinds, np.frombuffer(b"-0123456789", np.uint8))] = ord("0")
    return kinds


def _read(buf: bytes, rows: int) -> tuple[pa.Table | None, str]:
    """Arrow's reading of the lines, or (None, why) if it refuses them. Strings that Arrow would
    turn into timestamps are read again as the strings they are."""
    as_strings: list[str] = []
    while True:
        schema = pa.schema([(name, pa.string()) for name in as_strings]) if as_strings else None
        options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        read = pj.ReadOptions(use_threads=False, block_size=max(len(buf) + 1, 1 << 16))
        try:
            table = pj.read_json(pa.BufferReader(buf), read_options=read, parse_options=options)
        except pa.ArrowInvalid as err:
            return None, str(err)
        if table.num_rows != rows:
            return None, f"{table.num_rows} rows from {rows} lines"
        retype = [f.name for f in table.schema if f.name in _FIELDS and pa.types.is_timestamp(f.type)]
        if not retype or set(retype) <= set(as_strings):
            return table, ""
        as_strings += retype


_FIELDS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "category_id", "value", "request_id",
           "position")


# Raw events as an Arrow table (a Parquet file's row groups): the same rules, no JSON reading.
# Each event field and the Arrow types (by kind) under which some row of it can be accepted;
# a column of any other type is a schema error (event_columns), not one rejection per row.
# A column of Arrow type null (no value in any row) is read as absent in every row.
_COLUMN_KINDS = {
    "event_id": ("string", "integer"),
    "user_id": ("string", "integer", "float"),
    "item_id": ("string", "integer", "float"),
    "event_type": ("string",),
    "timestamp": ("integer", "float", "string", "timestamp"),
    "category_id": ("string", "integer", "float"),
    "value": ("integer", "float"),
    "request_id": ("string", "integer"),
    "position": ("integer", "float"),
}
_KIND_WORDS = {"string": "UTF-8 strings", "integer": "integers", "float": "floats", "timestamp": "timestamps"}
TABLE_CHUNK_ROWS = 1 << 16  # table rows validated at a time: about as many as an 8 MiB chunk of JSON lines


def _kind(t: pa.DataType) -> str | None:
    """string, integer, float, timestamp or null: how validation reads a column of this type (None: it cannot)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("timestamp", pa.types.is_timestamp), ("null", pa.types.is_null)):
        if test(t):
            return kind
    return None


def event_columns(schema: pa.Schema, where: str) -> list[str]:
    """The event fields a raw events table has, in its order (the columns to read). A required
    field that is absent, or a field whose type no event can have, is an InputError naming
    ``where`` (the file), the column and the fix; other columns are ignored. A column of Arrow
    type null (pandas writes text columns that way when no row has a value, e.g. in a file of
    no rows) is no error: each row is read as without that field, as a JSON line without it is."""
    names = schema.names
    for name in REQUIRED_FIELDS:
        if name not in names:
            near = [n for n in names if n.lower().replace("-", "_") == name]
            hint = f"; rename its column {near[0]!r} to {name!r}" if near else ""
            raise InputError(where, f"has no {name!r} column, a required event field{hint}",
                             f"write the events with the columns {', '.join(REQUIRED_FIELDS)} (optional: "
                             f"{', '.join(f for f in _FIELDS if f not in REQUIRED_FIELDS)})")
    for name in _FIELDS:
        if name not in names:
            continue
        if names.count(name) > 1:
            raise InputError(where, f"has {names.count(name)} columns named {name!r}", "keep one of them")
        t = schema.field(name).type
        if _kind(t) not in ("null", *_COLUMN_KINDS[name]):
            words = [_KIND_WORDS[k] for k in _COLUMN_KINDS[name]]
            want = " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)
            raise InputError(where, f"column {name!r} has Arrow type {t}, which no event can have",
                             f"write {name} as {want}")
    return [n for n in names if n in _FIELDS]


def parse_table(table: pa.Table, now_ms: int | None = None) -> ParsedLines:
    """Validate raw events given as table rows: exactly what the JSON line of each row gives,
    where a row is the dict of its non-null event fields (Arrow timestamps as integer ms):
    parse_event(row), except that a row whose JSON is over MAX_RECORD_BYTES is
    ``record_too_large`` and a row with a string that is not valid UTF-8 is ``not_utf8``, as
    such a line is. Only the event fields (``_FIELDS``) are read; other columns are ignored.
    Accepted events keep the row order; a rejection's raw record is the row as JSON, like a
    rejected line's text (an invalid string in it as its bytes, undecodable ones as \\xNN)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    table = table.select([n for n in table.column_names if n in _FIELDS])
    plain, undecided, raw_values = _plain_columns(table)
    ok, columns = accept(plain, now)
    ok &= ~undecided
    fast = np.flatnonzero(ok)
    events = pa.Table.from_arrays([c.filter(pa.array(ok)) for c in columns], schema=EVENT_SCHEMA)
    slow_idx, slow_events, rejections = [], [], []
    rest = np.flatnonzero(~ok)
    if len(rest):
        # The rows as plain Python values (float16 as float, dictionaries decoded, timestamps as
        # ms), with the raw value put back where the plain one is null: unsigned IDs beyond int64,
        # and strings that are not UTF-8 (as bytes).
        rows = plain.take(pa.array(rest)).to_pylist()
        for name, (where, raw) in raw_values.items():
            picked = np.flatnonzero(where[rest])
            for j, value in zip(picked.tolist(), raw.take(pa.array(rest[picked])).to_pylist()):
                rows[j][name] = value
        for i, row in zip(rest.tolist(), rows):
            got = _parse_row({k: v for k, v in row.items() if v is not None}, now)
            if isinstance(got, Event):
                slow_idx.append(i)
                slow_events.append(got)
            else:
                rejections.append(got)
    return _interleaved(fast, [events], slow_idx, slow_events, rejections)


def _parse_row(row: dict, now_ms: int) -> Event | Rejection:
    """parse_event of a table row, with the checks parse_event makes only on a line: a row with
    invalid UTF-8 (bytes values) goes as its JSON line, rejected as ``not_utf8`` (or
    ``record_too_large``); a row whose JSON is over MAX_RECORD_BYTES as ``record_too_large``.
    (accept() never accepts such a row: its strings are at most MAX_FIELD_CHARS characters,
    each at most 12 bytes of JSON, and 5 * 1024 * 12 bytes plus the rest is under 64 KiB.)"""
    if any(isinstance(v, bytes) for v in row.values()):
        return parse_event(_json_line(row), now_ms)
    text = json.dumps(row, default=str)  # ASCII: as many bytes as characters
    if len(text) > MAX_RECORD_BYTES:
        return parse_event(text.encode(), now_ms)
    return parse_event(row, now_ms)


def _json_line(row: dict) -> bytes:
    """The row as json.dumps writes it, but each bytes value written as a JSON string of those
    very bytes (escaped where JSON needs it), valid UTF-8 or not: the line a writer of raw
    strings would have written."""
    parts = []
    for name, value in row.items():
        if isinstance(value, bytes):
            text = json.dumps(value.decode("utf-8", errors="surrogateescape"), ensure_ascii=False)
            encoded = text.encode("utf-8", errors="surrogateescape")
        else:
            encoded = json.dumps(value, default=str).encode()
        parts.append(json.dumps(name).encode() + b": " + encoded)
    return b"{" + b", ".join(parts) + b"}"


def _plain_columns(table: pa.Table) -> tuple[pa.Table, np.ndarray, dict[str, tuple[np.ndarray, pa.Array]]]:
    """The table in the types accept() reads (those of Arrow's JSON reader: int64, double, string;
    timestamps as integer ms), the rows it must leave to parse_event, and, per column, the rows
    whose plain value is null for want of a type to hold it, with the raw values to give
    parse_event there: unsigned integers beyond int64 (Python ints), strings that are not valid
    UTF-8 (bytes: Arrow does not check the UTF-8 of the Parquet strings it reads)."""
    undecided = np.zeros(table.num_rows, dtype=bool)
    columns, raw_values = [], {}
    for name in table.column_names:
        arr = table.column(name).combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        t = arr.type
        if _kind(t) == "string":
            if not pa.types.is_string(t):
                arr = pc.cast(arr, pa.string())
            bad = _invalid_utf8(arr)
            if bad.any():
                undecided |= bad
                raw_values[name] = (bad, arr.cast(pa.binary()))
                arr = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), arr)
        elif pa.types.is_uint64(t):
            over = pc.fill_null(pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, t)), False)
            over = over.to_numpy(zero_copy_only=False)
            if over.any():
                undecided |= over
                raw_values[name] = (over, arr)
            arr = pc.cast(pc.if_else(pa.array(over), pa.scalar(None, t), arr), pa.int64())
        elif pa.types.is_integer(t):
            arr = pc.cast(arr, pa.int64())
        elif pa.types.is_floating(t):
            arr = pc.cast(arr, pa.float64())
        elif pa.types.is_timestamp(t):
            arr = _ms(arr)
        columns.append(arr)
    return pa.Table.from_arrays(columns, names=table.column_names), undecided, raw_values


def _invalid_utf8(arr: pa.Array) -> np.ndarray:
    """Where a string array holds a value that is not valid UTF-8 (Python's rule, which is
    Arrow's): Arrow checks the whole array at once; only if that fails is each distinct value decoded."""
    try:
        arr.validate(full=True)
        return np.zeros(len(arr), dtype=bool)
    except pa.ArrowInvalid:
        pass
    encoded = arr.cast(pa.binary()).dictionary_encode()
    bad = np.array([not _is_utf8(v) for v in encoded.dictionary.to_pylist()] + [False])
    return bad[pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)]


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _ms(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """An Arrow timestamp as integer UTC milliseconds, floored (as validation reads an ISO time
    with microseconds); a zoneless timestamp is taken as UTC, as a zoneless ISO string is."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    unit = arr.type.unit
    ms = values * 1000 if unit == "s" else values // {"ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    return pa.array(ms, pa.int64(), mask=~_present(arr))


def accept(table: pa.Table, now_ms: int) -> tuple[np.ndarray, list[pa.Array]]:
    """(which rows parse_event accepts, the EVENT_SCHEMA columns of every row). Rows not accepted
    here may still be accepted by parse_event; they are simply not decided here."""
    d = _Decider(table)
    event_id = d.text(d.get("event_id"), True)
    user_id, item_id = d.hashed("user_id", True)[0], d.hashed("item_id", True)[0]
    category, has_category = d.hashed("category_id", False)
    request_id = d.text(d.get("request_id"), False)
    event_type = d.event_types()
    ts = d.timestamps(now_ms)
    value = d.values()
    position = d.positions()
    columns = [event_id, pa.array(user_id), pa.array(item_id), event_type, pa.array(ts),
               pa.array(category, mask=~has_category), value, request_id, position]
    return d.ok, [c.cast(f.type) for c, f in zip(columns, EVENT_SCHEMA)]


class _Decider:
    """One table's columns as parse_event would read them; ``ok`` turns False for every row whose
    acceptance is not decided here (a value parse_event rejects, or a type it might)."""

    def __init__(self, table: pa.Table):
        self.table, self.n = table, table.num_rows
        self.ok = np.ones(self.n, dtype=bool)

    def get(self, name: str) -> pa.Array:
        return self.table.column(name).combine_chunks() if name in self.table.column_names else pa.nulls(self.n)

    def undecided(self, arr: pa.Array, required: bool) -> None:
        """A type parse_event may reject: leave it those rows."""
        self.ok[slice(None) if required else _present(arr)] = False

    def integers(self, arr: pa.Array) -> pa.Array | None:
        """int64 values of an integer field. parse_event takes an integral float for the int it equals;
        Arrow reads a column of ints and floats as doubles, exact below 2**53."""
        if pa.types.is_integer(arr.type):
            return arr
        if not pa.types.is_floating(arr.type):
            return None
        v = pc.fill_null(arr, 0.5).to_numpy(zero_copy_only=False)
        whole = (np.floor(v) == v) & (np.abs(v) < 2.0**53)  # also False for NaN and infinities
        self.ok[_present(arr) & ~whole] = False
        return pa.array(np.where(whole, v, 0).astype(np.int64), mask=~_present(arr))

    def text(self, arr: pa.Array, required: bool) -> pa.Array:
        """A field as parse_event's _string sees it: a string, or an integer's str()."""
        if pa.types.is_integer(arr.type):
            arr = pc.cast(arr, pa.string())
        elif not pa.types.is_string(arr.type):  # null (absent), bool, or floats where parse_event wants strings
            self.undecided(arr, required)
            return pa.nulls(self.n, pa.string())
        length = pc.fill_null(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)
        self.ok[length > MAX_FIELD_CHARS] = False
        if required:
            self.ok[~_present(arr) | (length == 0)] = False
        return arr

    def hashed(self, name: str, required: bool) -> tuple[np.ndarray, np.ndarray]:
        """(stable_id of an ID field, where it is present): integers (integral floats too) by value, strings by text."""
        arr = self.get(name)
        numbers = self.integers(arr)
        if numbers is not None:
            if required:
                self.ok[~_present(numbers)] = False
            return _INT_IDS.lookup(pc.fill_null(numbers, 0).to_numpy(zero_copy_only=False)), _present(numbers)
        if pa.types.is_string(arr.type) and not required:
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)  # "" means none
        arr = self.text(arr, required)
        return _hashed(arr), _present(arr)

    def event_types(self) -> pa.Array:
        event_type = self.get("event_type")
        if not pa.types.is_string(event_type.type):
            event_type = pa.nulls(self.n, pa.string())
        self.ok &= pc.fill_null(pc.is_in(event_type, pa.array(EVENT_TYPES)), False).to_numpy(zero_copy_only=False)
        return event_type

    def timestamps(self, now_ms: int) -> np.ndarray:
        raw_ts = self.get("timestamp")
        stamps = self.integers(raw_ts)
        if stamps is not None:
            self.ok &= _present(stamps)
            ts = pc.fill_null(stamps, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        elif pa.types.is_string(raw_ts.type):
            ts = _iso_timestamps(raw_ts, self.ok)
        else:
            self.undecided(raw_ts, True)
            ts = np.zeros(self.n, np.int64)
        self.ok &= (ts >= MIN_TIMESTAMP_MS) & (ts <= now_ms + MAX_FUTURE_MS)
        return ts

    def values(self) -> pa.Array:
        value = self.get("value")
        if pa.types.is_integer(value.type) or pa.types.is_floating(value.type):
            # numpy's int64 -> float64 rounds to nearest like Python's float(int); Arrow's safe cast would refuse
            numbers = pc.fill_null(value, 0).to_numpy(zero_copy_only=False).astype(np.float64)
            self.ok &= np.isfinite(numbers)
            return pa.array(numbers, mask=~_present(value))
        self.undecided(value, False)
        return pa.nulls(self.n, pa.float64())

    def positions(self) -> pa.Array:
        position = self.integers(self.get("position"))
        if position is None:
            self.undecided(self.get("position"), False)
            return pa.nulls(self.n, pa.int32())
        pos = pc.fill_null(position, 0).to_numpy(zero_copy_only=False)
        inside = (pos >= -(2**31)) & (pos < 2**31)
        self.ok &= inside
        return pa.array(np.where(inside, pos, 0).astype(np.int32), mask=~_present(position))


def _present(arr: pa.Array) -> np.ndarray:
    return ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


class _IntIds:
    """stable_id of integer IDs, vectorized: a hash index of the IDs met so far (up to ``limit``).
    The table is one (index, ids) pair, built whole (its hash table too) before it replaces the
    last, so concurrent lookups only ever read one finished table."""

    def __init__(self, limit: int = 1 << 22):
        self.limit, self.table = limit, self._built(np.empty(0, np.int64), np.empty(0, np.int64))

    @staticmethod
    def _built(keys: np.ndarray, ids: np.ndarray) -> tuple[pd.Index, np.ndarray]:
        index = pd.Index(keys)
        index.get_indexer(keys[:1])  # builds the hash table now, not in a reader
        return index, ids

    def lookup(self, values: np.ndarray) -> np.ndarray:
        index, ids = self.table
        pos = index.get_indexer(values)
        missing = pos < 0
        if not missing.any():
            return ids[pos]
        new = np.unique(values[missing])
        keys = index.to_numpy()
        if len(keys) + len(new) > self.limit:  # start again from this chunk's IDs
            keys, ids, new = np.empty(0, np.int64), np.empty(0, np.int64), np.unique(values)
        fresh = np.fromiter((stable_id(int(v)) for v in new), np.int64, len(new))
        self.table = index, ids = self._built(np.concatenate([keys, new]), np.concatenate([ids, fresh]))
        return ids[index.get_indexer(values)]


_INT_IDS = _IntIds()


def _hashed(text: pa.Array) -> np.ndarray:
    """stable_id of each value (0 where null), computed once per distinct value."""
    encoded = text.dictionary_encode()
    hashes = np.fromiter((stable_id(v) for v in encoded.dictionary.to_pylist()), np.int64, len(encoded.dictionary))
    indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
    return hashes[indices] if len(hashes) else np.zeros(len(text), np.int64)


def _iso_timestamps(arr: pa.Array, ok: np.ndarray) -> np.ndarray:
    """String timestamps read by the very function parse_event uses, once per distinct string."""
    encoded = arr.dictionary_encode()
    parsed = [timestamp_ms(v) for v in encoded.dictionary.to_pylist()]
    ms = np.array([0 if p is None else p for p in parsed] + [0], dtype=np.int64)
    good = np.array([p is not None for p in parsed] + [False])
    indices = pc.fill_null(encoded.indices, len(parsed)).to_numpy(zero_copy_only=False)
    ok &= good[indices]
    return ms[indices]
