"""The backfill on one machine without Beam: the stages of pipelines/batch/shards.py as tasks for a
pool of threads (or this thread alone, with one worker).

  1. read      one task per input file: validated events go to user shards
  2. users     one task per user shard: its tables; its events go to item shards
  3. items     one task per item shard: item statistics

Threads, not processes: the work is Arrow and numpy kernels, which release the GIL, and the
shuffle between stages is a list of Arrow tables per shard in memory (no copies, no pickling).
Tasks return what they made; this thread files it by shard in task order, so the tables come out
the same on any number of workers. Each task's counts are summed here. A failed task stops the
run (tasks not started are cancelled) and its error is raised as it is, so an InputError stays
one line.
"""
from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from features.negatives import ItemPool
from pipelines.batch import shards
from pipelines.batch.shards import ShardSettings

Runner = Callable[[Callable[..., tuple], list[tuple], str], Iterator[tuple[int, tuple]]]


def run_local(files: list[str], settings: ShardSettings, now_ms: int | None, catalog: np.ndarray | None,
              next_item: bool, workers: int) -> Counter:
    """Run the three stages over ``files`` into ``settings.output``; the summed counts (shards.Count names)."""
    users: dict[int, list[pa.Table]] = {}  # user shard -> its event chunks, in (file, chunk) order
    items: dict[int, list[pa.Table]] = {}  # item shard -> its events, in user shard order
    counts: Counter = Counter()

    def read(number: int, path: str) -> tuple[Counter, list[tuple[int, pa.Table]]]:
        got: Counter = Counter()
        return got, list(shards.read_file(number, path, settings.output, settings.shards, now_ms, _count(got)))

    def user_shard(shard: int, pool: ItemPool | None) -> tuple[Counter, list[tuple[int, pa.Table]]]:
        got: Counter = Counter()
        raw = pa.concat_tables(users.pop(shard))  # taken, so the shard's chunks go once it is built
        return got, list(shards.user_shard(shard, raw, settings, pool, _count(got)))

    def item_shard(shard: int, as_of_ms: int) -> tuple[Counter, list]:
        shards.item_shard(shard, pa.concat_tables(items.pop(shard)), settings.output, as_of_ms)
        return Counter(), []

    with _runner(workers) as run:
        for got, chunks in _in_order(run(read, list(enumerate(files)), "read files")):
            counts.update(got)
            for shard, table in chunks:
                users.setdefault(shard, []).append(table)
        # next_item negatives as of each example's time, from every user's behaviors
        pool = (ItemPool.from_parts([ItemPool.part(t) for s in sorted(users) for t in users[s]], catalog)
                if next_item else None)
        for got, chunks in _in_order(run(user_shard, [(s, pool) for s in sorted(users)], "user shards")):
            counts.update(got)
            for shard, table in chunks:
                items.setdefault(shard, []).append(table)
        if settings.stats_as_of_ms is not None:
            for got, _ in _in_order(run(item_shard, [(s, settings.stats_as_of_ms) for s in sorted(items)],
                                        "item shards")):
                counts.update(got)
    return counts


def _in_order(results: Iterator[tuple[int, tuple]]) -> list[tuple]:
    """A stage's results in task order, whatever order the tasks finished in: the shards' chunks,
    and so every table's rows, come out the same on any number of workers."""
    return [result for _, result in sorted(results, key=lambda r: r[0])]


def _count(counts: Counter) -> shards.Count:
    def count(name: str, n: int) -> None:
        counts[name] += n
    return count


@contextmanager
def _runner(workers: int) -> Iterator[Runner]:
    """A function that runs tasks (fn, argument tuples, stage name) and yields (task number,
    result) as each task finishes: in this thread for one worker, else on that many threads."""
    if workers <= 1:
        def inline(fn, tasks, stage):
            with _progress(len(tasks), stage) as bar:
                for number, args in enumerate(tasks):
                    yield number, fn(*args)
                    bar.update()
        yield inline
        return
    executor = ThreadPoolExecutor(workers, thread_name_prefix="backfill")

    def pooled(fn, tasks, stage):
        with _progress(len(tasks), stage) as bar:
            numbers = {executor.submit(fn, *args): number for number, args in enumerate(tasks)}
            for future in as_completed(numbers):
                bar.update()
                yield numbers[future], future.result()  # a task's error is raised here
    try:
        yield pooled
    finally:  # on an error or Ctrl-C the tasks not started are dropped; running ones end with their shard
        executor.shutdown(wait=True, cancel_futures=True)


def _progress(total: int, stage: str) -> tqdm:
    """A bar per stage on a terminal's stderr; nothing elsewhere."""
    return tqdm(total=total, desc=f"backfill: {stage}", unit=" tasks", file=sys.stderr,
                disable=not sys.stderr.isatty())
