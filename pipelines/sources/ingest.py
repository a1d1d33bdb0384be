"""Any source -> raw JSON-lines files, split at a time cutoff into the backfill
part and the later part that the stream job replays, plus a hashed item catalog."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import ConfigError
from features.id_dictionary import Collector
from features.ids import stable_ids
from features.validate import timestamp_ms
from pipelines.sources import datasets
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream


RESULT = "ingest.json"


@dataclass
class IngestResult:
    backfill_records: int
    stream_records: int
    cutoff_ms: int
    catalog_items: int
    label_kind: str  # the labeling that fits the dataset
    notes: list[str]  # what the loader passed on, once per file and kind (lines not UTF-8, extra columns)


def ingest(dataset: str, path: Path | None, synthetic: SyntheticConfig, out: Path,
           stream_fraction: float) -> IngestResult:
    """Write out/raw/backfill/*.jsonl, out/raw/stream/*.jsonl, out/catalog.parquet, out/ids.parquet (raw <->
    hashed IDs), out/ingest.json (this result, read by the backfill for its defaults) and, for synthetic, truth."""
    if dataset not in datasets.DATASETS:
        raise datasets.DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(datasets.DATASETS)}")
    if dataset != "synthetic" and path is None:
        raise datasets.DatasetError(f"dataset {dataset!r} needs a path (--path FOLDER_OR_FILE)")
    if not 0.0 <= stream_fraction < 1.0:
        raise ConfigError(f"stream_fraction (the latest share of time held back for the stream) must be in [0, 1), "
                          f"got {stream_fraction}")
    out.mkdir(parents=True, exist_ok=True)
    if dataset == "synthetic":
        stream = SyntheticStream(synthetic)
        catalog = stream.catalog()
        cutoff = synthetic.start_ms + int(synthetic.days * DAY_MS * (1 - stream_fraction))
        truth: list[dict] = []

        def records() -> Iterator[str]:
            for lines, rows in stream.windows():
                truth.extend(rows)
                yield from lines
        ids = Collector()
        n_back, n_stream = _split(records(), cutoff, out, ids)
        pq.write_table(pa.Table.from_pylist(truth), out / "truth.parquet")
        return _finish(IngestResult(n_back, n_stream, cutoff, _write_catalog(catalog, out, ids), "impression_click", []),
                       out, ids)

    path = Path(path)
    make: Callable[..., Iterable[dict | bytes]] = {
        "ml-latest-small": lambda notes: datasets.movielens_events(path),
        "ml-1m": lambda notes: datasets.movielens_events(path),
        "ml-100k": lambda notes: datasets.movielens_events(path),
        "taobao": lambda notes: datasets.taobao_events(path, notes=notes),
        "csv": lambda notes: datasets.csv_events(path, notes=notes),
        "parquet": lambda notes: datasets.parquet_events(path),
    }[dataset]
    times = np.array([t for t in map(_timestamp, make(None)) if t >= 0], dtype=np.int64)
    if len(times) == 0:
        raise datasets.DatasetError(f"{path} holds no events with a readable timestamp (ms or ISO-8601)")
    cutoff = int(np.quantile(times, 1 - stream_fraction)) if stream_fraction > 0 else int(times.max()) + 1
    notes, ids = datasets.Notes(), Collector()
    n_back, n_stream = _split(make(notes), cutoff, out, ids)
    if dataset.startswith("ml-"):
        catalog = datasets.movielens_catalog(path)
    else:
        catalog = _catalog_from_events(make(None))
    return _finish(IngestResult(n_back, n_stream, cutoff, _write_catalog(catalog, out, ids), "next_item",
                                notes.lines()), out, ids)


def _finish(got: IngestResult, out: Path, ids: Collector) -> IngestResult:
    ids.write(out)
    (out / RESULT).write_text(json.dumps(asdict(got), indent=2) + "\n")
    return got


def read_result(workdir: Path) -> IngestResult | None:
    """What ingest wrote into a run folder (None where ingest did not make it)."""
    path = Path(workdir) / RESULT
    return IngestResult(**json.loads(path.read_text())) if path.is_file() else None


def _split(records: Iterable[str | bytes | dict], cutoff: int, out: Path, ids: Collector) -> tuple[int, int]:
    """Route records by timestamp; records without a readable time go to the backfill (to be rejected there)."""
    later: list[str] = []

    def early() -> Iterator[str | bytes | dict]:
        for rec in records:
            if _timestamp(rec, ids) >= cutoff:
                later.append(rec if isinstance(rec, str) else json.dumps(rec, default=str))
            else:
                yield rec
    n_back = write_json_lines(early(), out / "raw" / "backfill")
    n_stream = write_json_lines(later, out / "raw" / "stream")
    return n_back, n_stream


def _timestamp(rec: str | bytes | dict, ids: Collector | None = None) -> int:
    """The record's time in ms, -1 where it has none (raw bytes: a line to be rejected); its
    raw IDs go into ``ids``."""
    if isinstance(rec, (str, bytes)):
        try:
            rec = json.loads(rec)
        except ValueError:
            return -1
    if ids is not None and isinstance(rec, dict):
        ids.add_record(rec)
    ts = timestamp_ms(rec.get("timestamp")) if isinstance(rec, dict) else None
    return -1 if ts is None else ts


def _catalog_from_events(records: Iterable[dict | bytes]) -> pa.Table:
    pairs = {}
    for r in records:
        if isinstance(r, dict) and r.get("item_id") is not None:
            pairs.setdefault(r["item_id"], r.get("category_id"))
    return pa.table({"item_id": list(pairs), "category_id": list(pairs.values()), "text": [None] * len(pairs)})


def _write_catalog(raw: pa.Table, out: Path, ids: Collector) -> int:
    """Hash the catalog's raw IDs the same way as events (features.ids)."""
    ids.add_column("item_id", raw.column("item_id").to_pylist())
    ids.add_column("category_id", raw.column("category_id").to_pylist())
    cats = raw.column("category_id").to_pylist()
    missing = [c is None or c == "" for c in cats]  # as in validation: no category is category 0
    hashed_cats = stable_ids(["" if m else c for m, c in zip(missing, cats)])
    table = pa.table({
        "item_id": stable_ids(raw.column("item_id")),
        "category_id": np.where(missing, 0, hashed_cats),
        "text": raw.column("text").cast(pa.string()),
    })
    pq.write_table(table, out / "catalog.parquet")
    return table.num_rows
