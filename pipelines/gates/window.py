"""The data gate of a continuous-training window: a window that fails is not trained on.

Three parts, each naming its reasons:
- the Great Expectations suite kept as JSON in feature_repo/expectations/training_window.json
  (schema, null rates, label values and rate, ID and timestamp ranges, the history-length
  distribution, freshness against the windows before); each expectation's ``meta.reason``
  names its failure (label_rate, null_rate, sentinel_ids, timestamp_range, ...);
- what GX cannot see in the rows alone: a window mostly made of records already trained on
  (``replayed_window``: the at-least-once topic repeats a few after a restore, a replay repeats
  them all), and records that could not be read at all (``unreadable_records``);
- drift of the key features against the previous accepted windows (pipelines.gates.drift),
  computed for every window and recorded, and a failure (``drift``) past the bounds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.gates.drift import DriftBounds, drift, drifted
from pipelines.gates.gx import load_suite, run_suite
from pipelines.gates.result import GateResult

SUITE = Path(__file__).resolve().parents[2] / "feature_repo" / "expectations" / "training_window.json"
COLUMNS = ("user_id", "item_id", "category_id", "timestamp", "label", "seq_length", "behind_ms")


@dataclass(frozen=True)
class WindowBounds:
    """What a window may hold besides the suite's rules."""

    max_duplicate_fraction: float = 0.5  # more of the window already seen: a replay, not a restore's repeats
    max_unreadable_fraction: float = 0.01
    drift: DriftBounds = field(default_factory=DriftBounds)


def profile(frame: pa.Table) -> dict[str, np.ndarray]:
    """The values drift is measured on: category, history length, label."""
    return {"category_id": frame.column("category_id").drop_null().to_numpy(),
            "seq_length": frame.column("seq_length").to_numpy(zero_copy_only=False).astype(float),
            "label": frame.column("label").drop_null().to_numpy().astype(float)}


def window_gate(frame: pa.Table, raw: int, duplicates: int, unreadable: int, reference: dict[str, np.ndarray],
                bounds: WindowBounds = WindowBounds(), suite: str | Path = SUITE) -> tuple[GateResult, dict]:
    """(the verdict, the drift figures) of a window's gate frame (COLUMNS).

    ``raw``: records read for the window; ``duplicates``: of them, already seen; ``unreadable``:
    not parseable. ``reference``: profile() of the accepted windows before (empty for the first)."""
    missing = [c for c in COLUMNS if c not in frame.column_names]
    if missing:
        raise ValueError(f"the window's gate frame lacks {missing}")
    result = run_suite(frame.select(list(COLUMNS)), lambda: load_suite(suite), "data gate [window]")
    failures, reasons = list(result.failures), list(result.reasons)

    def fail(reason: str, message: str) -> None:
        failures.append(message)
        if reason not in reasons:
            reasons.append(reason)

    if raw and duplicates / raw > bounds.max_duplicate_fraction:
        fail("replayed_window", f"{duplicates} of {raw} records were already trained on "
                                f"(over {bounds.max_duplicate_fraction:.0%}): a replayed window")
    if raw and unreadable / raw > bounds.max_unreadable_fraction:
        fail("unreadable_records", f"{unreadable} of {raw} records could not be read")
    figures = drift(profile(frame), reference) if frame.num_rows else {}
    for message in drifted(figures, bounds.drift):
        fail("drift", f"drift: {message}")
    verdict = GateResult("data gate [window]", not failures, failures, result.checked + 3, reasons)
    return verdict, figures
