"""Keyed functions for tests/pipelines/stream/test_batches.py (a module of their own: the job's
interpreter imports them by name). WatermarkProbe notes, for each batch of lines, the watermark it
arrived at, and each bucket's marks (empty batches); it sends a (bucket, b"x") record per batch
on. MarkProbe counts the records and the marks of each bucket it gets."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pyflink.datastream import KeyedProcessFunction


class WatermarkProbe(KeyedProcessFunction):
    def __init__(self, out: str):
        self.out = out

    def open(self, runtime_context):
        self.seen, self.marks = [], Counter()

    def process_element(self, batch, ctx):
        from pipelines.stream.runtime import parse_line

        if not batch[1]:  # a bucket's mark before a checkpoint barrier
            self.marks[batch[0]] += 1
            return
        times = [parse_line(line, None)[1].timestamp for line in batch[1]]
        self.seen.append({"bucket": batch[0], "watermark": ctx.timer_service().current_watermark(), "times": times})
        yield batch[0], b"x"

    def close(self):
        Path(self.out).write_text(json.dumps({"batches": self.seen, "marks": self.marks}))


class MarkProbe(KeyedProcessFunction):
    def __init__(self, out: str):
        self.out = out

    def open(self, runtime_context):
        self.records, self.marks = Counter(), Counter()

    def process_element(self, record, ctx):
        (self.records if record[1] else self.marks)[record[0]] += 1
        return iter(())

    def close(self):
        Path(self.out).write_text(json.dumps({"records": self.records, "marks": self.marks}))
