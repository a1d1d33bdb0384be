"""Loaders for real datasets. Each yields raw event records (dicts, the same
shape a Kafka message carries) and, where the dataset has one, an item catalog
table (item_id, category_id, text) with raw IDs. Nothing is validated here:
validation is features.validate.parse_event, in every engine."""
from __future__ import annotations

import csv
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from features.errors import InputError

DATASETS = ("synthetic", "ml-latest-small", "ml-1m", "ml-100k", "taobao", "csv", "parquet")
TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}


class DatasetError(InputError):
    """A dataset path or layout that cannot be read, with the fix in the message."""


@dataclass
class Notes:
    """What a loader passed on that a person should hear of once: per file and kind, how many
    lines and the first one (e.g. "reviews.csv: 3 lines not UTF-8 (first: line 4)")."""

    counts: Counter = field(default_factory=Counter)
    first: dict = field(default_factory=dict)

    def add(self, path: Path, kind: str, line_no: int, detail: str) -> None:
        key = (str(path), kind)
        self.counts[key] += 1
        self.first.setdefault(key, (line_no, detail))

    def lines(self) -> list[str]:
        out = []
        for (path, kind), n in self.counts.items():
            line_no, detail = self.first[(path, kind)]
            out.append(f"{path}: {n:,} line{'s' if n > 1 else ''} {kind} (first: line {line_no}{detail})")
        return out


def _csv_rows(path: Path, notes: Notes | None) -> Iterator[tuple[int, list[str] | bytes]]:
    """(line number, fields) of a CSV file; a line that is not UTF-8 comes as its bytes, for
    validation to reject as not_utf8 (noted once per file)."""
    # A field may be as long as the file (the csv module stops at 128 KB with an error); the
    # backfill rejects an over-long record as record_too_large, like any other.
    limit = csv.field_size_limit(sys.maxsize)
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            yield from _numbered(csv.reader(f), path, notes)
    finally:
        csv.field_size_limit(limit)


def _numbered(reader, path: Path, notes: Notes | None) -> Iterator[tuple[int, list[str] | bytes]]:
    for line_no, row in enumerate(reader, start=1):
        text = ",".join(row)
        if not text.isascii() and not _encodes(text):
            if notes is not None:
                notes.add(path, "not UTF-8", line_no, "; the backfill rejects them as not_utf8")
            yield line_no, text.encode("utf-8", errors="surrogateescape").replace(b"\n", b" ")
        else:
            yield line_no, row


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes the reader could not decode, kept as lone surrogates
        return False


def _need(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} does not exist; pass the folder that holds the dataset's files")
    return path


def movielens_catalog(folder: Path) -> pa.Table:
    """movies.csv (ml-latest-small, ml-25m), movies.dat (ml-1m) or u.item (ml-100k)."""
    genres_100k = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                   "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                   "Thriller", "War", "Western"]
    ids, cats, texts = [], [], []
    if (folder / "movies.csv").exists():
        with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                genres = row["genres"].split("|")
                ids.append(row["movieId"]), cats.append(genres[0]), texts.append(f"{row['title']} ({', '.join(genres)})")
    elif (folder / "movies.dat").exists():
        with open(folder / "movies.dat", encoding="latin-1") as f:
            for line in f:
                movie, title, genres = line.rstrip("\n").split("::")
                ids.append(movie), cats.append(genres.split("|")[0]), texts.append(f"{title} ({genres.replace('|', ', ')})")
    elif (folder / "u.item").exists():
        with open(folder / "u.item", encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\n").split("|")
                flags = [g for g, flag in zip(genres_100k, parts[5:]) if flag == "1"] or ["unknown"]
                ids.append(parts[0]), cats.append(flags[0]), texts.append(f"{parts[1]} ({', '.join(flags)})")
    else:
        raise DatasetError(f"{folder} has no movies.csv, movies.dat or u.item: not a MovieLens folder")
    return pa.table({"item_id": ids, "category_id": cats, "text": texts})


def movielens_events(folder: Path) -> Iterator[dict]:
    """Every rating is a 'rate' behavior at its timestamp (seconds -> ms)."""
    folder = _need(folder)
    genre = dict(zip(*[movielens_catalog(folder).column(c).to_pylist() for c in ("item_id", "category_id")]))
    if (folder / "ratings.csv").exists():
        with open(folder / "ratings.csv", newline="", encoding="utf-8") as f:
            rows = ((r["userId"], r["movieId"], r["rating"], r["timestamp"]) for r in csv.DictReader(f))
            yield from _ratings(rows, genre)
    elif (folder / "ratings.dat").exists():
        with open(folder / "ratings.dat", encoding="latin-1") as f:
            yield from _ratings((line.rstrip("\n").split("::") for line in f), genre)
    elif (folder / "u.data").exists():
        with open(folder / "u.data", encoding="latin-1") as f:
            yield from _ratings((line.rstrip("\n").split("\t") for line in f), genre)
    else:
        raise DatasetError(f"{folder} has no ratings.csv, ratings.dat or u.data: not a MovieLens folder")


def _ratings(rows, genre: dict) -> Iterator[dict]:
    for user, movie, rating, ts in rows:
        yield {"event_id": f"ml:{user}:{movie}:{ts}", "user_id": user, "item_id": movie, "event_type": "rate",
               "timestamp": int(ts) * 1000, "category_id": genre.get(movie), "value": float(rating)}


def taobao_events(path: Path, notes: Notes | None = None) -> Iterator[dict | bytes]:
    """UserBehavior.csv: user_id,item_id,category_id,behavior_type,timestamp (no header)."""
    path = _need(path)
    if path.is_dir():
        path = _need(path / "UserBehavior.csv")
    for line_no, row in _csv_rows(path, notes):
        if isinstance(row, bytes):
            yield row
            continue
        if len(row) != 5:
            yield {"event_id": f"tb:line{line_no}", "raw": ",".join(row)}  # rejected downstream: fields missing
            continue
        user, item, cat, kind, ts = row
        yield {"event_id": f"tb:{user}:{item}:{kind}:{ts}", "user_id": user, "item_id": item,
               "event_type": TAOBAO_TYPES.get(kind, kind), "timestamp": int(ts) * 1000 if ts.isdigit() else ts,
               "category_id": cat}


def csv_events(path: Path, time_unit: str = "s", notes: Notes | None = None) -> Iterator[dict | bytes]:
    """A generic ``user,item,time[,category]`` CSV (Amazon-review style), header optional. Columns
    past the fourth are not read (noted once)."""
    scale = {"s": 1000, "ms": 1}[time_unit]
    for line_no, row in _csv_rows(_need(path), notes):
        if isinstance(row, bytes):
            yield row
            continue
        if len(row) < 3:
            yield {"event_id": f"csv:{line_no}", "raw": ",".join(row)}  # rejected downstream: fields missing
            continue
        if line_no == 1 and not row[2].strip().lstrip("-")[:1].isdigit():
            continue  # header: a time column name, not epoch digits or an ISO date
        if len(row) > 4 and notes is not None:
            notes.add(path, "with more than 4 columns", line_no,
                      f", {len(row)} columns; only user,item,time,category are read")
        user, item, ts = row[0], row[1], row[2]
        yield {"event_id": f"csv:{line_no}", "user_id": user, "item_id": item, "event_type": "rate",
               "timestamp": int(ts) * scale if ts.strip().isdigit() else ts,
               "category_id": row[3] if len(row) > 3 else None}


def parquet_events(path: Path) -> Iterator[dict]:
    """Parquet event logs whose columns use the event schema's names (raw IDs allowed)."""
    path = _need(path)  # a missing path says so, not "cannot read Parquet file"
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        try:
            reader = pq.ParquetFile(file)
            batches = reader.iter_batches(batch_size=65_536)
            for batch in batches:  # corrupt pages surface only while reading
                yield from batch.to_pylist()
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"cannot read Parquet file {file}: {err}") from None
