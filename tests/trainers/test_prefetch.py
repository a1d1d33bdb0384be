import threading
import time

import pytest

from trainers.prefetch import Prefetcher


def test_yields_every_item_in_order():
    with Prefetcher(iter(range(100)), depth=3) as it:
        assert list(it) == list(range(100))


def test_producer_runs_ahead_of_the_consumer():
    made = []

    def source():
        for i in range(10):
            made.append(i)
            yield i

    with Prefetcher(source(), depth=4) as it:
        assert next(it) == 0
        deadline = time.monotonic() + 5
        while len(made) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        # One item consumed, up to `depth` queued, and one more waiting to be put.
        assert len(made) >= 5


def test_producer_error_is_raised_at_its_position():
    def source():
        yield 1
        yield 2
        raise KeyError("bad row 3")

    it = Prefetcher(source())
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(KeyError, match="bad row 3"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_close_stops_an_endless_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = Prefetcher(endless(), depth=2)
    assert next(it) == 0
    it.close()
    assert not it._thread.is_alive()
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(it)


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(iter([]), depth=0)
