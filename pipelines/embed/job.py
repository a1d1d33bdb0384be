"""Beam embedding job: an item catalog -> versioned item vectors, incrementally.

Reads a catalog (Parquet: item_id int64 as features.ids hashes it, optional ``text``
(string or binary), optional ``image_ref`` (a file path under ``image_root`` or the
catalog's folder; one that leads outside it is not read: ``image_outside_root``)) and
writes under ``<workdir>/offline/item_embeddings`` (layout in features/item_vectors.py)::

    version=<v>/part-<run>-*.parquet   item_id, encoder_version, vector, modalities, content_digest, embedded_ts
    _rejected/version=<v>/part-<run>-*  one row per named issue: reason, action, detail, raw
    _manifests/<v>.json                the encoder spec of version v and its fingerprint
    _serving.json                      the version Feast serves
    _counts.json                       this run's counts (also returned)
    _staging/<run>/                    a running (or killed) run's files, before they move into place

Steps: Prepare (clean text, digest the content; rows without an item_id are dead
letters) -> CoGroupByKey with the version's existing (item_id, content_digest) ->
drop duplicate rows and items whose content is already embedded in this version ->
BatchElements -> EncodeBatch (models loaded once per worker in ``setup``; one
batched forward pass per batch) -> WriteToParquetBatched.

Incremental: a re-run embeds only new or changed items and writes new part files
beside the old ones (never rewriting them); a new version starts from nothing in its
own folder, and serving moves to it only when asked (``serve=True``), or when no
version serves yet. A version name bound to one encoder spec (its manifest) refuses
a different spec. Runner options pass through to Beam (DirectRunner by default).
"""
from __future__ import annotations

import glob
import json
import shutil
import sys
import time
import typing
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from tqdm import tqdm

from features.errors import MissingInput, RecstreamError
from features.item_vectors import (ISSUE_SCHEMA, ITEM_EMBEDDING_SCHEMA, MANIFESTS, REJECTED, REPAIRS, STAGING,
                                   VALID_SINCE_EVER_MS, content_digest, embeddings_root, file_digest, prepare_text,
                                   serving_version, set_serving_version, version_dir)
from pipelines.batch.adapters import NAMESPACE
from pipelines.config import typed
from pipelines.embed.encoders import EncoderSpec, ItemContent, load_item_encoder

ISSUES = "issues"


class EmbedError(RecstreamError, ValueError):
    """The job cannot run as configured; the message says what to change."""


@typed
@dataclass(frozen=True)
class EmbedConfig:
    workdir: str  # the run folder: vectors go to <workdir>/offline/item_embeddings
    catalog: str | None = None  # Parquet file or glob; default <workdir>/catalog.parquet
    image_root: str | None = None  # relative image_ref paths resolve here (default: the catalog's folder)
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    batch_size: int = 64
    serve: bool | None = None  # True: serve this version after the run; None: only if none serves yet
    device: str = "cpu"
    now_ms: int | None = None  # embedded_ts of this run's rows; None means the wall clock

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"EmbedConfig.batch_size must be an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.encoder, EncoderSpec):
            raise ValueError(f"EmbedConfig.encoder must be an EncoderSpec, got {type(self.encoder).__name__}")

    @property
    def catalog_path(self) -> str:
        return self.catalog or str(Path(self.workdir) / "catalog.parquet")

    @property
    def offline(self) -> Path:
        return Path(self.workdir) / "offline"


class Prepared(NamedTuple):
    """One catalog row ready to embed: clean content, its digest and the issues met so far."""

    item_id: int
    text: str | None
    image_ref: str | None
    image_path: str | None
    digest: str
    issues: tuple[tuple[str, str], ...]
    raw_text: str | None  # a preview for the dead letters
    valid_from_ms: int | None = None  # the catalog's valid_from (ms), or what SelectFn decides


def _preview(value, limit: int = 300) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", errors="backslashreplace") if isinstance(value, (bytes, bytearray)) else str(value)
    return text[:limit]


class PrepareFn(beam.DoFn):
    """Catalog row -> (item_id, Prepared) | a dead letter (tagged 'issues') when the row has no item_id."""

    def __init__(self, spec: EncoderSpec, image_root: str):
        self.spec, self.image_root = spec, image_root
        self.read = Metrics.counter(NAMESPACE, "catalog_rows")

    def process(self, row: dict):
        self.read.inc()
        item = row.get("item_id")
        if isinstance(item, int) and not isinstance(item, bool):
            yield item, self.prepare(item, row)
        else:
            Metrics.counter(NAMESPACE, "rejected.missing_item_id").inc()
            yield beam.pvalue.TaggedOutput(ISSUES, {
                "item_id": None, "reason": "missing_item_id", "action": "dropped",
                "detail": f"item_id is {item!r}", "raw": _preview({k: _preview(v) for k, v in row.items()}, 500)})

    def prepare(self, item: int, row: dict) -> Prepared:
        raw_text = row.get("text")
        text, issues = prepare_text(raw_text, self.spec.max_text_chars)
        ref = row.get("image_ref") or None
        path, image_digest = None, None
        if ref is not None and self.spec.image_model != "none":
            path = inside(self.image_root, ref)
            if path is None:  # "../", an absolute path or a link that leads out: not read
                issues.append(("image_outside_root", f"{ref}: not under the image root {self.image_root}"))
            else:
                try:
                    image_digest = file_digest(path)
                except OSError:
                    image_digest = None  # the encoder names the reason (missing, unreadable)
        valid_from = row.get("valid_from")
        return Prepared(item, text, ref, path, content_digest(text, ref, image_digest), tuple(issues),
                        _preview(raw_text), valid_from if isinstance(valid_from, int) else None)


def inside(root: str, ref: str) -> str | None:
    """``ref`` resolved under ``root`` (links followed), or None if it leads outside it."""
    base = Path(root).resolve()
    path = (base / ref).resolve()
    return str(path) if path.is_relative_to(base) else None


class SelectFn(beam.DoFn):
    """(item_id, {new: [Prepared], old: [(embedded_ts, digest)]}) -> the Prepared to embed, if any.

    Duplicate catalog rows of one item keep one copy (the greatest digest: the same
    choice on every run); an item whose latest vector in this version has the same
    content digest is skipped."""

    def __init__(self):
        self.duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self.conflicts = Metrics.counter(NAMESPACE, "duplicate_conflicts")
        self.skipped = Metrics.counter(NAMESPACE, "skipped_unchanged")
        self.items = Metrics.counter(NAMESPACE, "items")

    def process(self, keyed):
        _, groups = keyed
        new = list(groups["new"])
        if not new:  # embedded before, gone from the catalog now: its vector stays
            return []
        self.items.inc()
        if len(new) > 1:
            self.duplicates.inc(len(new) - 1)
            if len({p.digest for p in new}) > 1:
                self.conflicts.inc()
        chosen = max(new, key=lambda p: p.digest)
        old = list(groups["old"])
        if old and max(old)[1] == chosen.digest:
            self.skipped.inc()
            return []
        if chosen.valid_from_ms is None and not old:  # the item's first content: it held all along
            chosen = chosen._replace(valid_from_ms=VALID_SINCE_EVER_MS)
        return [chosen]


# A progress bar on a terminal while the DirectRunner runs the encoders in this process (workers
# in other processes have none: the bar then stays at 0 and the stage's own line says when it ends).
_PROGRESS: list = []


class EncodeBatchFn(beam.DoFn):
    """A batch of Prepared -> one Arrow table of embedding rows (main) and issue rows (tagged)."""

    def __init__(self, spec: EncoderSpec, device: str, embedded_us: int):
        self.spec, self.device, self.embedded_us = spec, device, embedded_us
        self.encoder = None
        self.embedded = Metrics.counter(NAMESPACE, "embedded")
        self.encode_ms = Metrics.distribution(NAMESPACE, "encode_ms")

    def setup(self):
        self.encoder = load_item_encoder(self.spec, self.device)  # cached: once per worker process

    def process(self, batch: list[Prepared]):
        start = time.perf_counter()
        out = self.encoder.encode_batch([ItemContent(p.item_id, p.text, p.image_path) for p in batch])
        self.encode_ms.update(int(round((time.perf_counter() - start) * 1000)))
        found: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for row, reason, detail in out.issues:
            found[row].append((reason, detail))
        for i, p in enumerate(batch):
            modality = out.modalities[i]
            Metrics.counter(NAMESPACE, f"modality.{modality}").inc()
            issues = _merge(list(p.issues) + found.get(i, []))
            if modality == "fallback" and all(reason in REPAIRS for reason, _ in issues):
                issues.append(("no_content", "no text and no image_ref" if p.image_ref is None else
                               "no text, and this encoder version reads no images"))
            for reason, detail in issues:
                repaired = reason in REPAIRS
                action = "repaired" if repaired else "fallback" if modality == "fallback" else "modality_dropped"
                Metrics.counter(NAMESPACE, f"{'repaired' if repaired else 'rejected'}.{reason}").inc()
                raw = p.image_ref if reason.startswith("image") else p.raw_text
                yield beam.pvalue.TaggedOutput(ISSUES, {"item_id": p.item_id, "reason": reason, "action": action,
                                                        "detail": detail, "raw": raw})
        self.embedded.inc(len(batch))
        for bar in _PROGRESS:
            bar.update(len(batch))
        n = len(batch)
        yield pa.Table.from_arrays([
            pa.array([p.item_id for p in batch], pa.int64()),
            pa.array([self.spec.version] * n, pa.string()),
            pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * self.spec.dim),
                                     pa.array(out.vectors.reshape(-1), pa.float32())),
            pa.array(out.modalities, pa.string()),
            pa.array([p.digest for p in batch], pa.string()),
            pa.array(np.full(n, self.embedded_us, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC")),
            pa.array([self.embedded_us if p.valid_from_ms is None else p.valid_from_ms * 1000 for p in batch],
                     pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        ], schema=ITEM_EMBEDDING_SCHEMA)


def _merge(issues: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One issue per reason and item (text cut to max_text_chars, then to the model's word pieces, is one cut)."""
    merged: dict[str, list[str]] = {}
    for reason, detail in issues:
        merged.setdefault(reason, []).append(detail)
    return [(reason, "; ".join(details)) for reason, details in merged.items()]


def build(p: beam.Pipeline, cfg: EmbedConfig, run_id: str, embedded_us: int, existing: list[str],
          stage: Path) -> None:
    """The job's graph; it writes this run's vectors and issues under stage (see run_embed)."""
    spec = cfg.encoder
    files = sorted(glob.glob(cfg.catalog_path))
    columns = [c for c in ("item_id", "text", "image_ref", "valid_from") if c in pq.read_schema(files[0]).names]
    image_root = cfg.image_root or str(Path(files[0]).resolve().parent)
    prepared = (p | "ReadCatalog" >> beam.io.ReadFromParquet(cfg.catalog_path, columns=columns)
                | "Prepare" >> beam.ParDo(PrepareFn(spec, image_root)).with_outputs(ISSUES, main="items"))
    if existing:
        old = (p | "ExistingFiles" >> beam.Create(existing)
               | "ReadExisting" >> beam.io.ReadAllFromParquet(columns=["item_id", "content_digest", "embedded_ts"])
               | "OldKey" >> beam.Map(lambda r: (r["item_id"], (r["embedded_ts"], r["content_digest"]))))
    else:
        old = p | "NoExisting" >> beam.Create([]).with_output_types(typing.Tuple[int, typing.Any])
    todo = ({"new": prepared.items, "old": old} | "Join" >> beam.CoGroupByKey()
            | "Select" >> beam.ParDo(SelectFn()))
    encoded = (todo
               | "Batch" >> beam.BatchElements(min_batch_size=cfg.batch_size, max_batch_size=cfg.batch_size)
               | "Encode" >> beam.ParDo(EncodeBatchFn(spec, cfg.device, embedded_us)).with_outputs(ISSUES,
                                                                                                    main="rows"))
    encoded.rows | "WriteVectors" >> beam.io.WriteToParquetBatched(
        str(stage / "vectors" / f"part-{run_id}"), ITEM_EMBEDDING_SCHEMA, file_name_suffix=".parquet")
    issues = (prepared[ISSUES], encoded[ISSUES]) | "Issues" >> beam.Flatten()
    issues | "WriteIssues" >> beam.io.WriteToParquet(
        str(stage / "issues" / f"part-{run_id}"), ISSUE_SCHEMA, file_name_suffix=".parquet")


def run_embed(cfg: EmbedConfig, pipeline_args: list[str] | None = None) -> dict:
    """Embed the catalog's new and changed items into cfg.encoder.version; return the counts
    (also written to item_embeddings/_counts.json)."""
    spec = cfg.encoder
    if not glob.glob(cfg.catalog_path):
        raise MissingInput(cfg.catalog_path, "no item catalog matches; run `recstream ingest` or pass --catalog / --dataset")
    root = embeddings_root(cfg.offline)
    out = version_dir(cfg.offline, spec.version)
    _bind_version(root, spec)
    existing = sorted(str(f) for f in out.glob("*.parquet")) if out.is_dir() else []
    now = datetime.now(timezone.utc) if cfg.now_ms is None else datetime.fromtimestamp(cfg.now_ms / 1000, timezone.utc)
    run_id = now.strftime("%Y%m%dT%H%M%S%fZ")
    embedded_us = int(now.timestamp() * 1_000_000) if cfg.now_ms is None else cfg.now_ms * 1000
    start = time.perf_counter()
    # Beam writes this run's files (and its temporary folders) aside, under _staging/<run>; finished,
    # non-empty part files then move into place one by one (each rename atomic). A killed run
    # leaves only its staging folder, which the next run removes: readers never meet a partial file.
    shutil.rmtree(root / STAGING, ignore_errors=True)
    stage = root / STAGING / run_id
    stage.mkdir(parents=True)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(glob.glob(cfg.catalog_path)))
    with tqdm(total=rows, desc=f"embed {spec.version}", unit=" items", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        _PROGRESS[:] = [bar]
        try:
            with beam.Pipeline(options=PipelineOptions(pipeline_args or [])) as p:
                build(p, cfg, run_id, embedded_us, existing, stage)
        finally:
            _PROGRESS.clear()
    counts = _counts(p.result)
    issues_dir = root / REJECTED / f"version={spec.version}"
    for folder, target in ((stage / "vectors", out), (stage / "issues", issues_dir)):
        for part in sorted(folder.glob(f"part-{run_id}-*")):
            # A sink writes one empty shard when it got nothing: a run that embedded nothing
            # leaves the version folder exactly as it was.
            if pq.ParquetFile(part).metadata.num_rows:
                target.mkdir(parents=True, exist_ok=True)
                part.rename(target / part.name)
    shutil.rmtree(root / STAGING, ignore_errors=True)
    if not list(out.glob("*.parquet")):  # nothing embedded ever: an empty table, so readers and Feast work
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(ITEM_EMBEDDING_SCHEMA.empty_table(), out / "empty.parquet")
    if cfg.serve or (cfg.serve is None and serving_version(cfg.offline) is None):
        set_serving_version(cfg.offline, spec.version)
    counts.update(version=spec.version, fingerprint=spec.fingerprint(), run_id=run_id, output=str(out),
                  serving_version=serving_version(cfg.offline), seconds=round(time.perf_counter() - start, 3))
    (root / "_counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
    return counts


def _bind_version(root: Path, spec: EncoderSpec) -> None:
    """Record version -> spec on first use; refuse a version name already bound to another spec."""
    file = root / MANIFESTS / f"{spec.version}.json"
    if file.exists():
        recorded = json.loads(file.read_text(encoding="utf-8"))
        if recorded["fingerprint"] != spec.fingerprint():
            raise EmbedError(
                f"encoder version {spec.version!r} was embedded with another encoder spec (fingerprint "
                f"{recorded['fingerprint']}, {recorded['spec']}); this spec has fingerprint {spec.fingerprint()}. "
                "Declare a new version (--version) for a changed encoder.")
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(spec.manifest(), indent=2, sort_keys=True))


def _counts(result) -> dict:
    counts: dict = {"catalog_rows": 0, "items": 0, "duplicates": 0, "duplicate_conflicts": 0, "skipped_unchanged": 0,
                    "embedded": 0, "modalities": {}, "rejected": {}, "repaired": {}, "encode_seconds": 0.0}
    metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    for c in metrics["counters"]:
        name, value = c.key.metric.name, c.committed if c.committed is not None else c.attempted
        kind, _, reason = name.partition(".")
        if kind in ("rejected", "repaired"):
            counts[kind][reason] = counts[kind].get(reason, 0) + value
        elif kind == "modality":
            counts["modalities"][reason] = counts["modalities"].get(reason, 0) + value
        else:
            counts[name] = counts.get(name, 0) + value
    for d in metrics["distributions"]:
        if d.key.metric.name == "encode_ms":
            value = d.committed if d.committed is not None else d.attempted
            counts["encode_seconds"] += value.sum / 1000 if value else 0.0
    counts["rejected_total"] = sum(counts["rejected"].values())
    return counts
