"""`recstream ingest` and `recstream backfill`: a dataset as raw event files, then the Beam backfill."""
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
    i.set_defaults(func=ingest)

    b = sub.add_parser("backfill", help="Beam backfill; unknown flags go to Beam's PipelineOptions")
    b.add_argument("--input", required=True, help="glob of raw JSON-lines files (several: comma-separated)")
    b.add_argument("--output", required=True, help="folder for the offline tables")
    b.add_argument("--catalog", help="hashed catalog Parquet (needed for --labels next_item)")
    flags.caps(b)
    b.add_argument("--stats-as-of", type=int, help="ms; write user/item stats as of this time")
    b.add_argument("--labels-until", type=int,
                   help="ms; the data's end: impressions whose click window runs past it get no label")
    b.add_argument("--labels", default="impression_click", choices=["impression_click", "next_item"])
    b.add_argument("--negatives", type=int, default=1)
    b.set_defaults(func=backfill, beam_flags=True)


def ingest(args, extra) -> int:
    from pipelines.sources.ingest import ingest as run
    from pipelines.sources.synthetic import SyntheticConfig

    synthetic = flags.json_arg(args.synthetic, SyntheticConfig, "--synthetic")
    got = run(args.dataset, Path(args.path) if args.path else None, synthetic, Path(args.workdir),
              args.stream_fraction)
    for note in got.notes:
        print(f"recstream ingest: note: {note}", file=sys.stderr)
    print(json.dumps(vars(got), indent=2))
    return 0


def backfill(args, extra) -> int:
    from pipelines.batch.backfill import BackfillConfig, run_backfill
    from pipelines.config import from_dict

    cfg = from_dict(BackfillConfig, {
        "input": args.input, "output": args.output, "catalog": args.catalog,
        "sequence": {"max_len": args.max_len}, "recent_len": args.recent_len, "category_len": args.category_len,
        "stats_as_of_ms": args.stats_as_of, "labels_until_ms": args.labels_until,
        "labels": {"kind": args.labels, "negatives": args.negatives}})
    print(json.dumps(run_backfill(cfg, extra), indent=2))
    return 0
