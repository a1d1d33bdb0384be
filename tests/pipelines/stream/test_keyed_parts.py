"""The plain-Python parts of the keyed functions: item deltas packed per item bucket, and the
example timers of a bucket (one Flink timer at the earliest due time)."""
from __future__ import annotations

from pipelines.stream.keyed import ExampleTimers, combine, split


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
