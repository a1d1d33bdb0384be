"""Negatives drawn point in time: only items that exist at the example's time.

An item exists at time t once some behavior (any user's) with it is strictly before t. An
``ItemPool`` holds every behavior's (time, item, category), time-sorted, and each item's first
one, so that both draws are one ``searchsorted`` and one random index:

- ``uniform``: an item drawn uniformly among the items that exist at t;
- ``popularity``: a behavior drawn uniformly among the behaviors before t, i.e. an item drawn in
  proportion to its count before t (the point-in-time popularity).

A draw that hits an item the user has taken (at or before t), the positive itself or an item
already drawn for this positive is redrawn, up to ``20 * negatives`` tries, so a user who has taken nearly everything gets fewer negatives.
With a catalog, only catalog items are drawn; a negative's category is the item's category at
its first behavior (``uniform``) or at the drawn behavior (``popularity``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import BEHAVIOR_TYPES, UNKNOWN_CATEGORY, Event

SAMPLINGS = ("uniform", "popularity")
POOL_COLUMNS = ("user_id", "event_id", "timestamp", "item_id", "category_id", "event_type")


class ItemPool:
    """Every behavior's (time, item, category), time-sorted, and each item's first behavior."""

    def __init__(self, times: np.ndarray, items: np.ndarray, categories: np.ndarray):
        order = np.lexsort((categories, items, times))  # a total order: the same pool from any input order
        self.times, self.items, self.categories = times[order], items[order], categories[order]
        _, first = np.unique(self.items, return_index=True)
        first = np.sort(first)  # each item's first behavior, in time order
        self.born, self.born_items, self.born_categories = self.times[first], self.items[first], self.categories[first]

    @classmethod
    def from_table(cls, table: pa.Table, catalog: np.ndarray | None = None) -> ItemPool:
        """The pool of a table of events (EVENT_SCHEMA) or of a behavior log. Events are first
        deduplicated as the backfill's user shards do (features.offline.dedup: one copy per
        (user, event), of any type), then impressions are left out. With ``catalog``
        (item IDs), only its items."""
        if "event_type" in table.column_names:
            from features.offline import dedup

            table, _ = dedup(table)
            table = table.filter(pc.is_in(table.column("event_type"), pa.array(sorted(BEHAVIOR_TYPES))))
        if catalog is not None:
            table = table.filter(pc.is_in(table.column("item_id"), pa.array(np.asarray(catalog, np.int64))))
        cats = pc.fill_null(table.column("category_id"), UNKNOWN_CATEGORY)
        return cls(table.column("timestamp").to_numpy().astype(np.int64),
                   table.column("item_id").to_numpy().astype(np.int64), cats.to_numpy().astype(np.int64))

    @classmethod
    def from_events(cls, events: Sequence[Event], catalog: np.ndarray | None = None) -> ItemPool:
        from features.schema import events_to_table

        return cls.from_table(events_to_table(list(events)), catalog)

    @staticmethod
    def part(events: pa.Table) -> pa.Table:
        """The columns of a chunk of events that a pool is built from (``from_parts`` of every
        chunk's part): what a distributed job sends to the pool's one builder. Every event type
        is kept, so that copies of one event dedup as in the user shards."""
        return events.select(list(POOL_COLUMNS))

    @classmethod
    def from_parts(cls, parts: list[pa.Table], catalog: np.ndarray | None = None) -> ItemPool:
        """The pool of ``part`` tables gathered from every chunk (none: an empty pool)."""
        if not parts:
            return cls(*(np.zeros(0, np.int64) for _ in range(3)))
        return cls.from_table(pa.concat_tables(parts), catalog)

    def __len__(self) -> int:
        return len(self.times)

    def existing(self, ts: int) -> int:
        """How many items exist at ``ts`` (a behavior strictly before it)."""
        return int(np.searchsorted(self.born, ts, side="left"))

    def draw(self, ts: int, taken: set[int], n: int, rng: np.random.Generator, sampling: str = "uniform",
             positive: int | None = None) -> list[tuple[int, int]]:
        """Up to ``n`` distinct (item, category) negatives for an example at ``ts``, none in
        ``taken`` and none equal to ``positive``."""
        if sampling == "uniform":
            count, items, cats = self.existing(ts), self.born_items, self.born_categories
        elif sampling == "popularity":
            count, items, cats = int(np.searchsorted(self.times, ts, side="left")), self.items, self.categories
        else:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        out: list[tuple[int, int]] = []
        drawn: set[int] = set()
        for _ in range(20 * n):  # bounded tries for users who have taken almost everything
            if len(out) == n or count == 0:
                break
            j = int(rng.integers(count))
            item = int(items[j])
            if item in taken or item == positive or item in drawn:
                continue
            drawn.add(item)
            out.append((item, int(cats[j])))
        return out
