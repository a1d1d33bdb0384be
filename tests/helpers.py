"""Small builders shared by the engine tests: a tiny synthetic run folder."""
from __future__ import annotations

from pathlib import Path

from pipelines.backfill import BackfillConfig, run_backfill
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream


def backfilled_run(work: Path, users: int = 40, days: int = 4, seed: int = 0, bad_fraction: float = 0.0,
                   stats_as_of_ms: int | None = None) -> dict:
    """Synthetic events -> raw files -> Beam backfill into work/offline; returns the counts."""
    stream = SyntheticStream(SyntheticConfig(users=users, days=days, seed=seed, bad_fraction=bad_fraction))
    write_json_lines((line for lines, _ in stream.windows() for line in lines), work / "raw")
    return run_backfill(BackfillConfig(input=str(work / "raw" / "*.jsonl"), output=str(work / "offline"),
                                       stats_as_of_ms=stats_as_of_ms))
