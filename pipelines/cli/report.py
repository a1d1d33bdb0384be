"""`recstream report`: one self-contained HTML page of a run folder, with its plots."""
from __future__ import annotations

from pathlib import Path

from features.errors import MissingInput


def add(sub) -> None:
    r = sub.add_parser("report", help="write WORKDIR/report.html: metrics, windows, plots (matplotlib)")
    r.add_argument("--workdir", required=True)
    r.add_argument("--out", help="where to write the page (default WORKDIR/report.html)")
    r.add_argument("--bench", help="the samples file of bench/stream_bench.py --samples: freshness histograms")
    r.set_defaults(func=run)


def run(args, extra) -> int:
    from pipelines.report.page import write_report

    work = Path(args.workdir)
    if not (work / "offline").is_dir() and not (work / "summary.json").is_file():
        raise MissingInput(work, "no run there (no offline/ or summary.json); give a folder the demo or the backfill wrote")
    if args.bench and not Path(args.bench).is_file():
        raise MissingInput(args.bench, "give the file bench/stream_bench.py --samples FILE wrote")
    path, drawn = write_report(work, Path(args.out) if args.out else None, Path(args.bench) if args.bench else None)
    print(f"report: {path} ({drawn} plot{'s' if drawn != 1 else ''}); open it in a browser")
    return 0
