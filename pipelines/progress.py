"""Stage progress for long jobs: a numbered line per stage with its time."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Stages:
    def __init__(self, total: int, out=sys.stdout):
        self.total, self.out, self.n = total, out, 0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.say(f"[{self.n}/{self.total}] {name}: done in {self.seconds[name]:.1f}s")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
