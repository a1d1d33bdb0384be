"""`recstream ingest` and `recstream backfill`: a dataset as raw event files, then the backfill (local or Beam)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.cli import flags


def add(sub) -> None:
    i = sub.add_parser("ingest", help="write a dataset as raw event files + catalog into a run folder")
    i.add_argument("--dataset", default="synthetic")
    i.add_argument("--path")
    i.add_argument("--workdir", required=True)
    i.add_argument("--stream-fraction", type=float, default=0.1)
    i.add_argument("--synthetic", help='SyntheticConfig as JSON, e.g. \'{"users": 1000}\'')
    flags.json_output(i)
    i.set_defaults(func=ingest)

    b = sub.add_parser("backfill", help="raw events -> offline tables, on this machine (default) or on Beam "
                                        "(--engine beam; unknown flags go to Beam's PipelineOptions)")
    b.add_argument("--input", required=True, help="glob of raw event files: JSON lines, or Parquet (*.parquet, event "
                                                      "schema's column names); several: comma-separated")
    b.add_argument("--output", required=True, help="folder for the offline tables")
    b.add_argument("--catalog", help="hashed catalog Parquet: next_item negatives are drawn among its items only")
    flags.caps(b)
    b.add_argument("--stats-as-of", type=int, help="ms; write user/item stats as of this time (default: ingest's "
                                                   "cutoff, where the run has an ingest.json)")
    b.add_argument("--labels-until", type=int,
                   help="ms; the data's end: impressions whose click window runs past it get no label")
    b.add_argument("--labels", choices=["impression_click", "next_item"],
                   help="default: what `recstream ingest` found fits the data (its ingest.json above the "
                        "input), else impression_click")
    b.add_argument("--negatives", type=int, default=1, help="next_item: negatives per positive")
    b.add_argument("--sampling", choices=["uniform", "popularity"], default="uniform",
                   help="next_item: negatives drawn among the items that exist at the example's time, "
                        "uniformly or by their popularity by then")
    b.add_argument("--engine", choices=("local", "beam"), default="local",
                   help="local: threads on this machine (default); beam: a Beam pipeline, for a cluster runner "
                        "(e.g. --runner=FlinkRunner --flink_master=HOST:8081)")
    b.add_argument("--workers", type=int, help="the local engine's threads (default: every core)")
    flags.json_output(b)
    b.set_defaults(func=backfill, beam_flags=True)


def ingest(args, extra) -> int:
    from pipelines.sources.ingest import ingest as run
    from pipelines.sources.synthetic import SyntheticConfig

    synthetic = flags.json_arg(args.synthetic, SyntheticConfig, "--synthetic")
    got = run(args.dataset, Path(args.path) if args.path else None, synthetic, Path(args.workdir),
              args.stream_fraction)
    for note in got.notes:
        print(f"recstream ingest: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(vars(got), indent=2))
        return 0
    from pipelines.store.online_view import iso

    print(f"ingest: {got.backfill_records:,} records for the backfill (before {iso(got.cutoff_ms)}), "
          f"{got.stream_records:,} held back for the stream; {got.catalog_items:,} catalog items; "
          f"labels that fit: {got.label_kind}\n  wrote {args.workdir}: raw/backfill/, raw/stream/, catalog.parquet, "
          f"ids.parquet, ingest.json")
    return 0


def backfill(args, extra) -> int:
    from pipelines.batch.backfill import BackfillConfig, run_backfill
    from pipelines.config import from_dict
    from pipelines.sources.ingest import RESULT
    from pipelines.store.online_view import iso

    got = _ingest_result(args.input)
    labels, catalog, stats_as_of, labels_until = args.labels, args.catalog, args.stats_as_of, args.labels_until
    if got is not None:
        folder, got = got
        said = []
        if labels is None:
            labels = got.label_kind
            said.append(f"labels {labels}")
            if catalog is None and labels == "next_item" and (folder / "catalog.parquet").is_file():
                catalog = str(folder / "catalog.parquet")
        if stats_as_of is None and labels_until is None:  # both at the cutoff: where the stream takes over
            stats_as_of = labels_until = got.cutoff_ms
            said.append(f"statistics and labels as of the cutoff {iso(got.cutoff_ms)}")
        if said:
            print(f"recstream backfill: {', '.join(said)} (from {folder / RESULT}; flags override)", file=sys.stderr)
    labels = labels or "impression_click"
    cfg = from_dict(BackfillConfig, {
        "input": args.input, "output": args.output, "catalog": catalog,
        "sequence": {"max_len": args.max_len}, "recent_len": args.recent_len, "category_len": args.category_len,
        "stats_as_of_ms": stats_as_of, "labels_until_ms": labels_until,
        "labels": {"kind": labels, "negatives": args.negatives, "sampling": args.sampling}})
    counts = run_backfill(cfg, extra, engine=args.engine, workers=args.workers)
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        rejected = f" ({flags.counted(counts['rejected'])})" if counts["rejected"] else ""
        print(f"backfill: {counts['read']:,} records read: {counts['accepted']:,} accepted, "
              f"{counts['rejected_total']:,} rejected{rejected}, {counts['duplicates']:,} duplicates; "
              f"{counts['examples']:,} training examples ({labels})\n  tables in {args.output} (counts.json: every "
              f"count; rejected/: each rejected record with its reason)")
    if labels == "next_item" and counts["examples"] and not counts["negatives"]:
        print("recstream backfill: note: 0 negatives: no item " + ("of --catalog " if catalog else "") +
              "existed before any example (an item exists once some behavior took it); "
              + ("check that the catalog holds this data's hashed item IDs (recstream ingest writes them)" if catalog
                 else "the data may be too short"), file=sys.stderr)
    if counts["accepted"] and not counts["examples"] and labels == "impression_click":
        print("recstream backfill: note: 0 examples: no impression was followed by a click of its item; for data "
              "without impressions (ratings, purchases) use --labels next_item",
              file=sys.stderr)
    return 0


def _ingest_result(inputs: str):
    """(run folder, what ingest found) for the run folder the input lies in (W/raw/backfill/*.jsonl -> W),
    or None where ingest did not make it."""
    from pipelines.sources.ingest import read_result

    first = Path(inputs.split(",")[0])
    for folder in list(first.parents)[:3]:
        got = read_result(folder)
        if got is not None:
            return folder, got
    return None
