"""Item catalogs with content to embed: MovieLens titles, genres and tags; the synthetic generator's texts."""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features.ids import stable_ids


def movielens_content(folder: Path, max_tags: int = 12) -> pa.Table:
    """ml-latest-small (and other MovieLens folders) as raw item_id + text: "Title (year)
    (Genre, Genre)" plus, where tags.csv exists, "; tags: " and the item's most used tags."""
    from pipelines.sources.datasets import movielens_catalog

    catalog = movielens_catalog(Path(folder))
    tags: dict[str, Counter] = defaultdict(Counter)
    if (Path(folder) / "tags.csv").exists():
        with open(Path(folder) / "tags.csv", newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                tag = " ".join((row.get("tag") or "").split())
                if tag:
                    tags[row["movieId"]][tag.lower()] += 1
    texts = []
    for movie, text in zip(catalog.column("item_id").to_pylist(), catalog.column("text").to_pylist()):
        top = sorted(tags.get(movie, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:max_tags]
        texts.append(f"{text}; tags: {', '.join(t for t, _ in top)}" if top else text)
    return pa.table({"item_id": catalog.column("item_id"), "category_id": catalog.column("category_id"),
                     "text": pa.array(texts, pa.string())})


def write_content_catalog(raw: pa.Table, out: Path) -> int:
    """A raw catalog (item_id, text, optional image_ref) -> Parquet with hashed item_id, as ingest hashes."""
    columns = {"item_id": stable_ids(raw.column("item_id"))}
    for name in ("text", "image_ref"):
        if name in raw.column_names:
            columns[name] = raw.column(name)
    table = pa.table(columns)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return table.num_rows


def dataset_content(dataset: str, path: Path | None, workdir: Path, synthetic=None) -> Path:
    """Write <workdir>/item_content.parquet for a dataset: MovieLens titles + genres + tags, or the
    synthetic generator's item texts; returns its path."""
    from pipelines.sources.datasets import DatasetError
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

    if dataset == "synthetic":
        raw = SyntheticStream(synthetic or SyntheticConfig()).catalog()
    elif dataset.startswith("ml-"):
        if path is None:
            raise DatasetError(f"dataset {dataset!r} needs a path (--path FOLDER)")
        raw = movielens_content(Path(path))
    else:
        raise DatasetError(f"dataset {dataset!r} has no item content to embed; pass a catalog with text "
                           "and image_ref columns (--catalog)")
    out = Path(workdir) / "item_content.parquet"
    write_content_catalog(raw, out)
    return out
