"""Pending keys and their flush timers (pipelines.stream.pending): what each timer firing finds."""
from __future__ import annotations

import pytest

from pipelines.stream.pending import Pending


def test_keys_share_the_grid_tick_after_their_change_and_one_timer_and_are_taken_once():
    p = Pending(flush_ms=100, start_ms=1_030)
    assert p.add("a", 1_031)[2] == 1_130  # the tick's first key: its timer
    assert p.add("b", 1_129) == ({}, True, None)  # the same tick: one timer, one batch
    assert p.add("c", 1_130)[2] == 1_230  # a change at the tick waits for the next one
    assert p.add("a", 1_100) == ({}, False, None)  # pending already
    assert p.get("b") == (1_130, {}) and p.get("d") is None
    assert p.take(1_129) == {}  # nothing due before the tick
    assert sorted(p.take(1_130)) == ["a", "b"]
    assert [p.state_of(k) for k in "abcd"] == ["done", "done", "pending", "unknown"]
    assert p.take(1_130) == {} and p.state_of("b") == "done"  # the tick's other firings (timers from marks)
    assert p.add("d", 1_140)[2] is None  # the tick of c has its timer already
    assert sorted(p.take()) == ["c", "d"]  # the end of the input takes everything


def test_a_key_pending_again_is_not_done_for_a_later_timer_of_the_same_key():
    """The report timer of a key that was in the last batch and changed again since: its kept
    deltas belong to the new pending period and must stay for a crash (not cleared as done)."""
    p = Pending(flush_ms=100, start_ms=0)
    p.add(7, 10)
    assert list(p.take(100)) == [7] and p.state_of(7) == "done"
    assert p.add(7, 120)[1:] == (True, 200)
    assert p.state_of(7) == "pending"  # e.g. its report timer at 150
    assert p.take(150) == {} and p.state_of(7) == "pending"


def test_payloads_travel_with_their_keys():
    p = Pending(flush_ms=50, start_ms=0)
    p.add(1, 0)[0]["views"] = {"user_sequence"}
    assert p.add(1, 10)[0] == {"views": {"user_sequence"}}
    assert p.take(50) == {1: {"views": {"user_sequence"}}}
    with pytest.raises(ValueError, match="flush_ms"):
        Pending(flush_ms=0, start_ms=0)
