"""A gate's verdict: passed or not, every failure named, how many checks ran."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateResult:
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    checked: int = 0
    reasons: list[str] = field(default_factory=list)  # short names of what failed (e.g. label_rate), distinct

    def summary(self) -> str:
        if self.passed:
            return f"{self.name}: passed ({self.checked} checks)"
        return f"{self.name}: FAILED - " + "; ".join(self.failures)
