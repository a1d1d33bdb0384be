"""Build the next batches in a background thread while the model trains on the current one.

Arrow compute, numpy and torch release the GIL for most of a batch's
conversion, so one producer thread overlaps input with the step. An exception
in the producer is raised in the consumer at the batch where it happened;
closing the iterator (or leaving a ``with`` block) stops the producer.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetcher(Iterator[T]):
    """Iterate ``source`` up to ``depth`` items ahead in a daemon thread."""

    def __init__(self, source: Iterator[T], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True, name="prefetch")
        self._thread.start()

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            self._put((_DONE, err))
            return
        self._put((_DONE, None))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item, err = self._queue.get()
        if item is _DONE:
            self._finished = True
            self._thread.join()
            if err is not None:
                raise err
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer and wait for it (it stops at its next item)."""
        self._stop.set()
        self._finished = True
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
