"""The plain-Python parts of the keyed functions: item deltas packed per item bucket, the
example timers of a bucket (one Flink timer at the earliest due time), and the state cache
that writes a bucket's keys at its save (with a stand-in for Flink's MapState)."""
from __future__ import annotations

from pipelines.stream.examples import ExampleTimers
from pipelines.stream.keyed import combine, split
from pipelines.stream.runtime import BucketCache


def test_deltas_go_one_record_per_item_bucket_in_their_order():
    deltas = [(10, 5, 1), (3, 6, -2), (10, 7, 4), (13, 8, 1), (2**62 + 2, 9, 1)]
    records = combine(deltas, buckets=5)
    assert [bucket for bucket, _ in records] == [0, 3, 1]  # first seen first
    back = {bucket: split(packed) for bucket, packed in records}
    assert back == {0: [[10, 5, 1], [10, 7, 4]], 3: [[3, 6, -2], [13, 8, 1]], 1: [[2**62 + 2, 9, 1]]}
    assert all(item % 5 == bucket for bucket, rows in back.items() for item, _, _ in rows)


def test_example_timers_keep_one_timer_at_the_earliest_due_time():
    timers = ExampleTimers()
    timers.add(500, user=1)
    assert timers.to_register == 500
    timers.to_register = None  # registered
    timers.add(900, user=2)
    timers.add(700, user=3)
    assert timers.to_register is None  # the timer at 500 fires first and sets the next
    timers.add(300, user=4)
    assert timers.to_register == 300 and timers.timer == 300  # earlier than any: a timer of its own


def test_a_watermark_past_many_due_times_takes_them_all_and_sets_the_next():
    timers = ExampleTimers()
    for at, user in ((500, 1), (600, 2), (600, 3), (900, 4)):
        timers.add(at, user)
    assert timers.take(650) == {1, 2, 3}
    assert timers.to_register == 900 and timers.timer == 900
    assert timers.take(650) == set()  # a stale timer fires: nothing is due
    assert timers.take(10**18) == {4}
    assert timers.to_register is None and timers.by_time == {}


class MapStateDouble:
    """What BucketCache uses of a PyFlink MapState (get, put_all), counting its calls."""

    def __init__(self):
        self.held, self.calls = {}, []

    def get(self, key):
        self.calls.append(("get", key))
        return self.held.get(key)

    def put_all(self, pairs):
        pairs = dict(iter(pairs))  # BucketCache hands pairs, as PyFlink's process mode wants them
        self.calls.append(("put_all", sorted(pairs)))
        self.held.update(pairs)


def test_the_bucket_cache_writes_a_bucket_s_keys_once_at_its_save():
    state = MapStateDouble()
    state.held = {30: "x", 31: "y"}  # saved before
    cache = BucketCache(state, size=2, fresh=False)
    for value in range(3):
        cache.put(1, 10, value)  # bucket 1, key 10: put three times
    cache.put(1, 11, "b")
    assert cache.get(30) == "x" and cache.get(31) == "y"  # evict 10 and 11 from the cache, not saved yet
    assert state.calls == [("get", 30), ("get", 31)]  # nothing written before a save
    assert cache.get(10) == 2 and cache.get(11) == "b"  # unsaved values are still read, not the state
    assert len(state.calls) == 2
    assert cache.save(2) == 0  # another bucket: nothing of bucket 1
    assert cache.save(1) == 2  # how many keys it saved (the job counts them)
    assert state.calls[2:] == [("put_all", [10, 11])] and state.held == {10: 2, 11: "b", 30: "x", 31: "y"}
    assert cache.save(1) == 0  # nothing put since
    assert len(state.calls) == 3
    fresh = BucketCache(MapStateDouble(), size=2, fresh=True)
    assert fresh.get(12) is None and fresh.state.calls == []  # a fresh job's unknown key is not read


def test_the_bucket_cache_saves_a_batch_s_bucket_once_more_than_size_keys_wait():
    state = MapStateDouble()
    cache = BucketCache(state, size=3, fresh=False)
    cache.put(1, 10, "a")
    cache.put(2, 20, "b")
    cache.put(2, 21, "c")
    assert state.calls == []
    cache.put(2, 22, "d")
    assert state.calls == []  # saved at the end of the batch at most
    cache.trim(2)  # the end of bucket 2's batch, four keys wait: bucket 2 is saved (the current key in Flink)
    assert state.calls == [("put_all", [20, 21, 22])]
    cache.put(3, 30, "e")
    cache.trim(3)  # two keys wait
    assert state.calls == [("put_all", [20, 21, 22])]
    assert cache.get(99) is None and state.calls[-1] == ("get", 99)  # not fresh: an unknown key is read


def test_after_a_full_collection_the_survivors_are_frozen_so_the_next_one_skips_them():
    """The keyed state in memory is long-lived: without freezing, each full collection of the
    cyclic garbage collector scanned all of it again (200-280 ms pauses at 2,000 users)."""
    import gc

    from pipelines.stream.runtime import _freeze_after_full, short_gc_pauses

    held = [{"state": [i]} for i in range(10_000)]
    short_gc_pauses()
    short_gc_pauses()  # once per interpreter
    try:
        assert gc.callbacks.count(_freeze_after_full) == 1
        gc.collect()
        assert gc.get_freeze_count() >= len(held)
        cycle: list = []
        cycle.append(cycle)  # garbage made after the freeze is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.callbacks.remove(_freeze_after_full)
        gc.unfreeze()
