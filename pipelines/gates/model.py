"""The model gate of the one-shot demo: a candidate must reach an AUC and beat popularity."""
from __future__ import annotations

from pipelines.gates.result import GateResult


def model_gate(metrics: dict, min_auc: float, min_lift: float) -> GateResult:
    """The candidate must reach min_auc and beat the popularity baseline by min_lift."""
    failures = []
    auc, base = metrics.get("auc", float("nan")), metrics.get("baseline_auc", float("nan"))
    if not auc >= min_auc:
        failures.append(f"AUC {auc:.4f} < required {min_auc:.4f}")
    if not auc - base >= min_lift:
        failures.append(f"AUC {auc:.4f} does not beat popularity {base:.4f} by {min_lift:.4f}")
    return GateResult("model gate", not failures, failures, 2)
