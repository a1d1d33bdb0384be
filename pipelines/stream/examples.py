"""The training-example stream's join: impressions labeled by a click within the attribution
window, decided in event time. Plain Python (no engine); UserFeaturesFn keeps one per user in
keyed state and drives it with event-time timers (ExampleTimers: one Flink timer per bucket).

The batch definition is features.labels.impression_click over events deduplicated per
(user, event_id) (features.offline.dedup: the greatest (timestamp, event_id, item, category,
type code) copy wins). Here, with watermark W and allowed lateness L, every event with
timestamp < W - L is rejected as late before it reaches the join, so once
W - L >= t + window nothing can still change an impression at t: neither its click window
nor its own deduplication. It is then emitted with label_ms = t + window (when its label
became known), and the join forgets what can no longer matter. Equal to the batch whenever
no event was late, except for one corner: a copy of an already emitted impression's
event_id that arrives later with a timestamp beyond the window.
"""
from __future__ import annotations

from json.encoder import encode_basestring_ascii  # json.dumps' own string encoder
from dataclasses import dataclass, field

from features.schema import EVENT_TYPE_CODE, UNKNOWN_CATEGORY, Event

IMPRESSION, CLICK = EVENT_TYPE_CODE["impression"], EVENT_TYPE_CODE["click"]
# (timestamp, event_id, item_id, category_id, type code): the dedup order of features.offline.dedup
Copy = tuple[int, str, int, int, int]


@dataclass
class ClickJoin:
    """One user's impressions and clicks still inside the attribution horizon."""

    copies: dict[str, Copy] = field(default_factory=dict)  # event_id -> greatest copy seen
    emitted: set[str] = field(default_factory=set)  # impressions already out (until forgotten)

    def add(self, event: Event) -> int | None:
        """Record an event; returns the event time at which to call due() if it is an impression."""
        category = UNKNOWN_CATEGORY if event.category_id is None else event.category_id
        copy = (event.timestamp, event.event_id, event.item_id, category, EVENT_TYPE_CODE[event.event_type])
        old = self.copies.get(event.event_id)
        if old is None or copy > old:
            self.copies[event.event_id] = copy
        return event.timestamp if copy[4] == IMPRESSION else None

    def due(self, user_id: int, settled_ms: int, window_ms: int) -> list[tuple]:
        """Examples (user, item, category, timestamp, label, label_ms, event_id) of the impressions whose
        window ends at or before settled_ms (= watermark - allowed lateness), in sorted copy order; forgets
        copies that can no longer label anything (older than settled_ms - window_ms)."""
        horizon = settled_ms - window_ms  # an impression at or before it is due
        ready = sorted(c for c in self.copies.values()
                       if c[4] == IMPRESSION and c[0] <= horizon and c[1] not in self.emitted)
        out = []
        if ready:
            clicks: dict[int, list[int]] = {}
            for ts, _id, item, _cat, code in self.copies.values():
                if code == CLICK:
                    clicks.setdefault(item, []).append(ts)
            for ts, event_id, item, cat, _code in ready:
                label = int(any(ts <= c <= ts + window_ms for c in clicks.get(item, ())))
                out.append((user_id, item, cat, ts, label, ts + window_ms, event_id))
                self.emitted.add(event_id)
        for event_id in [e for e, c in self.copies.items() if c[0] < horizon]:
            del self.copies[event_id]
            self.emitted.discard(event_id)
        return out

    def waiting(self) -> list[int]:
        """The timestamps of the impressions not emitted yet (each is due once its window ends)."""
        return [c[0] for e, c in self.copies.items() if c[4] == IMPRESSION and e not in self.emitted]


# event_id: the impression's, which tells two otherwise equal examples apart (and a repeat from a new one)
EXAMPLE_FIELDS = ("user_id", "item_id", "category_id", "timestamp", "label", "label_ms", "event_id")


# json.dumps of the example's dict, as a template: every field but event_id is an int
_EXAMPLE_JSON = "{" + ", ".join(f'"{name}": %d' for name in EXAMPLE_FIELDS[:-1]) + f', "{EXAMPLE_FIELDS[-1]}": %s}}'


def example_json(example: tuple) -> str:
    """An example (EXAMPLE_FIELDS) as a JSON object, the text json.dumps gives its dict."""
    return _EXAMPLE_JSON % (*example[:-1], encode_basestring_ascii(example[-1]))


class ExampleTimers:
    """A bucket's users by the event time their click joins are due, with one Flink timer at the
    earliest (``to_register``, for the caller to register): a watermark that passes many due
    times fires one timer, which takes them all."""

    def __init__(self):
        self.by_time: dict[int, set[int]] = {}
        self.timer: int | None = None  # the earliest registered timer still to fire
        self.to_register: int | None = None

    def add(self, at: int, user: int) -> None:
        self.by_time.setdefault(at, set()).add(user)
        if self.timer is None or at < self.timer:
            self.timer = self.to_register = at

    def take(self, watermark: int) -> set[int]:
        """The users due at or before watermark; the next timer is set to the earliest left."""
        out: set[int] = set()
        for at in [t for t in self.by_time if t <= watermark]:
            out |= self.by_time.pop(at)
        self.timer = self.to_register = min(self.by_time) if self.by_time else None
        return out
