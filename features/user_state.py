"""One user's streaming feature state: every per-user view the backfill writes, kept one event at
a time by the same algebras (features.sequence, features.stats), so that a stream gives the
backfill's rows.

    lifelong    sequence state under the lifelong policy      -> user_sequence
    recent      sequence state of the last recent_len         -> user_recent
    categories  {category: sequence state of category_len}    -> user_category_sequence
    stats       stats.StatsState of every event               -> user_stats (and deltas for item_stats)

Floors. Each view starts from the row the online store held when the stream first met the user
(or the category), and an event at or below that row's newest time is already in it: the view
skips it. An event that every view it feeds skips is late (``apply`` returns None).

Duplicates. The sequence states keep one copy per event_id (the greatest), as always. The
statistics and the category sub-sequences need to know which copy they counted: ``copies`` keeps
the greatest copy of each recent event_id, so a greater copy replaces a counted one (its counts
move, in the user's and in the items' statistics; a changed category moves the behavior between
sub-sequences). ``copies`` forgets events older than the caller's ``settled_ms`` (watermark minus
allowed lateness: any copy that old is late anyway), so a copy that arrives with another
timestamp after its first copy has settled is counted again, unlike the backfill's dedup.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from features import sequence, stats
from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY, Event
from features.sequence import Behavior, SequencePolicy, SequenceState

LIFELONG, RECENT, CATEGORY, STATS = "user_sequence", "user_recent", "user_category_sequence", "user_stats"
NO_FLOOR = -1  # a view the store did not hold: every event is new to it
# copies are pruned once they pass this or twice their size after the last prune (amortized O(1)
# per event). Kept low: settled copies are most of a pickled state (each checkpoint's cost).
COPIES_FLOOR = 8


@dataclass(frozen=True)
class FeaturePolicy:
    """The per-user views' caps, declared once for the backfill and the stream."""

    sequence: SequencePolicy = field(default_factory=SequencePolicy)
    recent_len: int = 50
    category_len: int = 50

    def __post_init__(self) -> None:
        for name in ("recent_len", "category_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FeaturePolicy.{name} must be an integer >= 1, got {value!r}")
        types = self.sequence.event_types
        object.__setattr__(self, "recent", SequencePolicy(max_len=self.recent_len, event_types=types))
        object.__setattr__(self, "category", SequencePolicy(max_len=self.category_len, event_types=types))


@dataclass
class UserState:
    lifelong: SequenceState
    recent: SequenceState
    stats: stats.StatsState
    floors: dict  # view name, or (CATEGORY, category), -> floor ms
    categories: dict[int, SequenceState] = field(default_factory=dict)
    # event_id -> (the greatest copy, counted in the statistics; the greatest behavior copy, placed in
    # its category's sub-sequence), for the events not yet settled
    copies: dict[str, tuple] = field(default_factory=dict)
    pruned_at: int = 0  # len(copies) after the last prune (copies are pruned as they double)


@dataclass
class Applied:
    """What one event changed: the views to write and the item statistics' deltas
    (item_id, timestamp, kinds, sign)."""

    views: set = field(default_factory=set)
    item_deltas: list[tuple[int, int, tuple[int, ...], int]] = field(default_factory=list)


def bootstrap(policy: FeaturePolicy, rows: dict[str, dict | None]) -> UserState:
    """A user's state from the online rows of LIFELONG, RECENT and STATS (None where absent)."""
    def seq(view: str, p: SequencePolicy) -> tuple[SequenceState, int]:
        row = rows.get(view)
        return (sequence.empty(), NO_FLOOR) if row is None else (sequence.from_features(row, p), int(row["last_event_ms"]))

    lifelong, lifelong_floor = seq(LIFELONG, policy.sequence)
    recent, recent_floor = seq(RECENT, policy.recent)
    row = rows.get(STATS)
    counts = stats.empty() if row is None else stats.from_row(row)
    floors = {LIFELONG: lifelong_floor, RECENT: recent_floor, STATS: NO_FLOOR if row is None else counts.newest_ms}
    return UserState(lifelong, recent, counts, floors)


def needs_category(state: UserState, event: Event, policy: FeaturePolicy) -> int | None:
    """The category whose online row the state still needs before ``apply(event)``, or None."""
    if event.event_type not in policy.sequence.event_types:
        return None
    category = _category(event)
    return None if category in state.categories else category


def add_category(state: UserState, category: int, row: dict | None, policy: FeaturePolicy) -> None:
    """Start a category's sub-sequence from its online row (None: the store has none)."""
    state.categories[category] = sequence.empty() if row is None else sequence.from_features(row, policy.category)
    state.floors[(CATEGORY, category)] = NO_FLOOR if row is None else int(row["last_event_ms"])


def apply(state: UserState, event: Event, policy: FeaturePolicy, settled_ms: int) -> Applied | None:
    """Add one event to every view whose floor it is above; None if it is above none (late).
    Call needs_category first and add the category it names."""
    copy = sequence.behavior(event)
    ts, event_id = copy[0], copy[1]
    counted, placed = state.copies.get(event_id, (None, None))  # the greatest copy; the greatest behavior copy
    is_behavior = event.event_type in policy.sequence.event_types
    out, fed = Applied(), False
    if ts > state.floors[STATS]:
        fed = True
        if counted is None or copy > counted:  # a greater copy replaces the one counted; others are repeats
            if counted is not None:
                _stat(state, counted, -1, out)
            _stat(state, copy, 1, out)
    if is_behavior:
        for view, seq, p in ((LIFELONG, state.lifelong, policy.sequence), (RECENT, state.recent, policy.recent)):
            if ts > state.floors[view]:
                fed = True
                sequence.add_behavior(seq, copy, p)  # keeps the greatest copy per event_id itself
                out.views.add(view)
        category = copy[3]
        if ts > state.floors[(CATEGORY, category)]:
            fed = True
            if placed is None or copy > placed:
                if placed is not None and placed[3] != category and placed[3] in state.categories:
                    if state.categories[placed[3]].pop(event_id, None) is not None:  # it moves category
                        out.views.add((CATEGORY, placed[3]))
                sequence.add_behavior(state.categories[category], copy, policy.category)
                out.views.add((CATEGORY, category))
    if not fed:
        return None
    state.copies[event_id] = (copy if counted is None else max(counted, copy),
                              (copy if placed is None else max(placed, copy)) if is_behavior else placed)
    if len(state.copies) > max(COPIES_FLOOR, 2 * state.pruned_at):
        state.copies = {k: c for k, c in state.copies.items() if max(b[0] for b in c if b) >= settled_ms}
        state.pruned_at = len(state.copies)
    return out


def _stat(state: UserState, copy: Behavior, sign: int, out: Applied) -> None:
    kinds = stats.kind_index(_TYPE_NAMES[copy[4]], BEHAVIOR_TYPES)
    stats.add(state.stats, copy[0], kinds, sign)
    out.views.add(STATS)
    out.item_deltas.append((copy[2], copy[0], kinds, sign))


def rows(state: UserState, user_id: int, views: set, policy: FeaturePolicy,
         arrays: bool = False) -> dict[str, list[dict]]:
    """The online rows of the given views (as apply returned them), by view name. A category left
    empty by a move is not written (its old row stays until the category gets a behavior). With
    ``arrays``, the rows' lists are int64/int32 arrays (array.array: packed without a copy)."""
    out: dict[str, list[dict]] = {}
    for view in views:
        if view == STATS:
            row = {"user_id": user_id, **stats.state_row(state.stats, arrays)}
        elif view == LIFELONG:
            row = {"user_id": user_id, **sequence.finalize(state.lifelong, policy.sequence, arrays)}
        elif view == RECENT:
            row = {"user_id": user_id, **sequence.finalize(state.recent, policy.recent, arrays)}
        else:
            category = view[1]
            row = {"user_id": user_id, "category_id": category,
                   **sequence.finalize(state.categories[category], policy.category, arrays)}
            if row["seq_length"] == 0:
                continue
            view = CATEGORY
        out.setdefault(view, []).append(row)
    return out


def _category(event: Event) -> int:
    return UNKNOWN_CATEGORY if event.category_id is None else event.category_id


_TYPE_NAMES = {code: name for name, code in EVENT_TYPE_CODE.items()}
