"""Raw record -> Event | Rejection. The single validation function of every engine."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from features.ids import stable_id
from features.schema import EVENT_TYPES, Event, Rejection

MIN_TIMESTAMP_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 3600 * 1000  # one day ahead of "now"
MAX_RECORD_BYTES = 64 * 1024
MAX_FIELD_CHARS = 1024

REASONS = {
    "not_utf8": "the record is not valid UTF-8",
    "malformed_json": "the record is not parseable JSON",
    "not_an_object": "the record is not a JSON object / mapping",
    "record_too_large": f"the record is over {MAX_RECORD_BYTES} bytes",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type",
    "field_too_large": f"a string field is over {MAX_FIELD_CHARS} characters",
    "unknown_event_type": f"event_type is not one of {', '.join(EVENT_TYPES)}",
    "timestamp_too_old": "timestamp is before 1990 (seconds given where milliseconds are expected?)",
    "timestamp_in_future": "timestamp is more than a day after the validation time",
    "late": "the event arrived after the allowed lateness",
}

REQUIRED_FIELDS = ("event_id", "user_id", "item_id", "event_type", "timestamp")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


class _Invalid(Exception):
    def __init__(self, reason: str, field: str | None, detail: str):
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


def parse_event(raw: Any, now_ms: int | None = None) -> Event | Rejection:
    """Validate a raw record: bytes or str (a JSON line) or a mapping.

    Never raises on bad input: every failure is a Rejection with a reason code
    from REASONS, the offending field, a human detail and the raw record.
    """
    try:
        record = _as_mapping(raw)
        return _to_event(record, now_ms if now_ms is not None else int(time.time() * 1000))
    except _Invalid as bad:
        return Rejection(bad.reason, bad.field, bad.detail, _raw_text(raw))


def _raw_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")[: 4 * MAX_RECORD_BYTES]
    if isinstance(raw, str):
        return raw[: 4 * MAX_RECORD_BYTES]
    try:
        return json.dumps(raw, default=str)[: 4 * MAX_RECORD_BYTES]
    except (TypeError, ValueError, RecursionError):
        pass
    try:  # repr fails like json.dumps on over-deep nesting and on ints over 4300 digits
        return repr(raw)[: 4 * MAX_RECORD_BYTES]
    except (ValueError, RecursionError):
        return f"<unprintable {type(raw).__name__}>"


def _as_mapping(raw: Any) -> dict:
    if isinstance(raw, bytes):
        if len(raw) > MAX_RECORD_BYTES:
            raise _Invalid("record_too_large", None, f"{len(raw)} bytes")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Invalid("not_utf8", None, str(err)) from None
    elif isinstance(raw, str) and len(raw.encode("utf-8", errors="surrogatepass")) > MAX_RECORD_BYTES:
        raise _Invalid("record_too_large", None, f"{len(raw)} characters")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as err:  # RecursionError: nesting too deep
            raise _Invalid("malformed_json", None, str(err)) from None
    if not isinstance(raw, dict):
        raise _Invalid("not_an_object", None, f"got {type(raw).__name__}")
    return raw


def _to_event(rec: dict, now_ms: int) -> Event:
    for name in REQUIRED_FIELDS:
        if rec.get(name) is None or rec.get(name) == "":
            raise _Invalid("missing_field", name, f"required field {name!r} is missing")
    event_type = _string(rec, "event_type")
    if event_type not in EVENT_TYPES:
        raise _Invalid("unknown_event_type", "event_type", f"{event_type!r}")
    ts = _timestamp(rec["timestamp"])
    if ts < MIN_TIMESTAMP_MS:
        raise _Invalid("timestamp_too_old", "timestamp", f"{ts} ms is before 1990-01-01")
    if ts > now_ms + MAX_FUTURE_MS:
        raise _Invalid("timestamp_in_future", "timestamp", f"{ts} ms is after {now_ms + MAX_FUTURE_MS}")
    category = rec.get("category_id")
    return Event(
        event_id=_string(rec, "event_id"),
        user_id=stable_id(_id(rec, "user_id")),
        item_id=stable_id(_id(rec, "item_id")),
        event_type=event_type,
        timestamp=ts,
        category_id=None if category in (None, "") else stable_id(_id(rec, "category_id")),
        value=_optional_number(rec, "value"),
        request_id=None if rec.get("request_id") is None else _string(rec, "request_id"),
        position=None if rec.get("position") is None else _integer(rec, "position"),
    )


def _string(rec: dict, name: str) -> str:
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid("wrong_type", name, f"{name} must be a string, got {type(value).__name__}")
    try:
        value = str(value)
    except ValueError:  # an int over sys.get_int_max_str_digits() digits
        raise _Invalid("field_too_large", name, f"{name} is an integer too long to print") from None
    if len(value) > MAX_FIELD_CHARS:
        raise _Invalid("field_too_large", name, f"{name} has {len(value)} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid("not_utf8", name, f"{name} holds a lone surrogate") from None
    return value


def _id(rec: dict, name: str) -> str | int:
    value = rec[name]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid("wrong_type", name, f"{name} must be a string or integer, got {type(value).__name__}")
    text = _string(rec, name)  # size checks apply to integer IDs too
    return text if isinstance(value, str) else value


def _integer(rec: dict, name: str) -> int:
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("wrong_type", name, f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():  # also NaN and infinities
        raise _Invalid("wrong_type", name, f"{name} must be an integer, got {value!r}")
    if not -(2**31) <= value < 2**31:  # the event schema stores it as int32
        raise _Invalid("wrong_type", name, f"{name} is outside the int32 range")
    return int(value)


def _optional_number(rec: dict, name: str) -> float | None:
    value = rec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _Invalid("wrong_type", name, f"{name} must be a finite number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        raise _Invalid("wrong_type", name, f"{name} must be a finite number, got a {value.bit_length()}-bit integer") from None
    if number in (float("inf"), float("-inf")):
        raise _Invalid("wrong_type", name, f"{name} must be a finite number, got {value!r}")
    return number


def timestamp_ms(value: Any) -> int | None:
    """A raw timestamp as validation reads it (integer ms or ISO-8601), or None if unreadable."""
    try:
        return _timestamp(value)
    except _Invalid:
        return None


def _timestamp(value: Any) -> int:
    """Integer milliseconds, or an ISO-8601 string with a zone (UTC assumed if none)."""
    if isinstance(value, bool):
        raise _Invalid("wrong_type", "timestamp", "timestamp must be integer milliseconds or ISO-8601")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid("wrong_type", "timestamp", f"unparseable timestamp {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return (parsed - _EPOCH) // _ONE_MS  # exact: float seconds * 1000 is off by 1 ms for some times
    raise _Invalid("wrong_type", "timestamp", f"timestamp must be integer milliseconds or ISO-8601, got {value!r}")
