"""The ID dictionary of a run: raw IDs as users know them <-> the hashed IDs every table holds.

ingest writes it (``ids.parquet``: entity, raw, id) from the records and the catalog it
writes; readers turn raw IDs into hashed ones with features.ids and hashed ones back into raw
ones with this table. A value that is already one of the run's hashed IDs is taken as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.ids import stable_id, stable_ids
from features.validate import MAX_FIELD_CHARS

ENTITIES = ("user_id", "item_id", "category_id")
FILE = "ids.parquet"
SCHEMA = pa.schema([("entity", pa.string()), ("raw", pa.string()), ("id", pa.int64())])


def id_text(value) -> str | None:
    """The text form stable_id hashes (42, 42.0 and "42" are all "42"); None for what is no valid
    ID (validation rejects those records)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value if 0 < len(value) <= MAX_FIELD_CHARS else None
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Collector:
    """Raw IDs seen, per entity (text forms), gathered while records stream past."""

    seen: dict[str, set[str]] = field(default_factory=lambda: {e: set() for e in ENTITIES})

    def add_record(self, rec: dict) -> None:
        for entity in ENTITIES:
            text = id_text(rec.get(entity))
            if text is not None:
                self.seen[entity].add(text)

    def add_column(self, entity: str, values) -> None:
        self.seen[entity].update(t for t in map(id_text, values) if t is not None)

    def table(self) -> pa.Table:
        rows = [(e, raw) for e in ENTITIES for raw in sorted(self.seen[e])]
        raws = [r for _, r in rows]
        return pa.table([pa.array([e for e, _ in rows], pa.string()), pa.array(raws, pa.string()),
                         pa.array([stable_id(r) for r in raws], pa.int64())], schema=SCHEMA)

    def write(self, folder: Path) -> int:
        table = self.table()
        pq.write_table(table, Path(folder) / FILE)
        return table.num_rows


@dataclass
class IdDictionary:
    """One entity's raw <-> hashed mapping (empty when the run has no dictionary)."""

    raw_of: dict[int, str]

    @classmethod
    def load(cls, workdir: Path, entity: str) -> "IdDictionary":
        path = Path(workdir) / FILE
        if not path.is_file():
            return cls({})
        t = pq.read_table(path, filters=[("entity", "=", entity)])
        return cls(dict(zip(t.column("id").to_pylist(), t.column("raw").to_pylist())))

    def resolve(self, values: pa.Array | list, known: set[int] | frozenset = frozenset()) -> tuple[np.ndarray, np.ndarray]:
        """(hashed IDs, which were given hashed): an integer that is one of the run's hashed IDs
        (in this dictionary or ``known``) is kept; anything else is a raw ID and is hashed."""
        items = values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else list(values)
        given = np.array([isinstance(v, int) and not isinstance(v, bool) and (v in self.raw_of or v in known)
                          for v in items], dtype=bool)
        hashed = np.zeros(len(items), np.int64)
        if (~given).any():
            hashed[~given] = stable_ids([items[i] for i in np.flatnonzero(~given)])
        if given.any():
            hashed[given] = [items[i] for i in np.flatnonzero(given)]
        return hashed, given

    def raw(self, ids) -> pa.Array:
        """The raw ID of each hashed ID (null where the run does not know it)."""
        return pa.array([self.raw_of.get(int(i)) for i in ids], pa.string())
