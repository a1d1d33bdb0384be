"""Stage progress for long jobs: a numbered line per stage with its time."""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
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


def quiet_libraries() -> None:
    """Library deprecation notices and advice drown the progress lines; RECSTREAM_VERBOSE=1 keeps them.

    Libraries add their own warning filters at import, so warnings raised inside
    site-packages are dropped where they are shown; the project's own still show.
    """
    if os.environ.get("RECSTREAM_VERBOSE"):
        return
    show = warnings.showwarning

    def show_ours(message, category, filename, lineno, file=None, line=None):
        if "site-packages" not in str(filename):
            show(message, category, filename, lineno, file, line)
    warnings.showwarning = show_ours
    # librdkafka's own connection log: a Kafka that cannot be reached is one ServiceError line already.
    logging.getLogger("recstream.kafka").setLevel(logging.CRITICAL)
    # Beam logs a worker's failure (a Ctrl-C too) with its traceback, then raises it: the raise is enough.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    for name in ("great_expectations", "great_expectations.data_context.types.base", "torchrec",
                 "torch", "torch.fx._symbolic_trace", "py.warnings", "apache_beam"):
        logging.getLogger(name).setLevel(logging.ERROR)
