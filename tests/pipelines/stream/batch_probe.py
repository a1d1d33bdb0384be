"""A keyed function for tests/pipelines/stream/test_batches.py (a module of its own: the job's
interpreter imports it by name). Notes, for each batch of lines, the watermark it arrived at."""
from __future__ import annotations

import json
from pathlib import Path

from pyflink.datastream import KeyedProcessFunction


class WatermarkProbe(KeyedProcessFunction):
    def __init__(self, out: str):
        self.out = out

    def open(self, runtime_context):
        self.seen = []

    def process_element(self, batch, ctx):
        from pipelines.stream.runtime import parse_line

        if not batch[1]:  # a bucket's mark before a checkpoint barrier
            return iter(())

        times = [parse_line(line, None)[1].timestamp for line in batch[1]]
        self.seen.append({"bucket": batch[0], "watermark": ctx.timer_service().current_watermark(), "times": times})
        return iter(())

    def close(self):
        Path(self.out).write_text(json.dumps(self.seen))
