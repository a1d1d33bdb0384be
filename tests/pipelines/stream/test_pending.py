"""Pending keys and their flush timers (pipelines.stream.pending): what each timer firing finds."""
from __future__ import annotations

import pytest

from pipelines.stream.pending import Pending


def test_keys_share_the_grid_tick_after_their_change_and_are_taken_once():
    p = Pending(flush_ms=100, start_ms=1_030)
    assert p.add("a", 1_031)[0] == 1_130 and p.add("b", 1_129)[0] == 1_130  # one tick, one batch
    assert p.add("c", 1_130)[0] == 1_230  # a change at the tick waits for the next one
    assert p.add("a", 1_100) == (None, {})  # pending already: its timer stands
    assert p.take(1_129) == {}  # nothing due before the tick
    assert sorted(p.take(1_130)) == ["a", "b"]
    assert [p.state_of(k, 1_130) for k in "abcd"] == ["done", "done", "pending", "unknown"]
    assert p.take(1_130) == {} and p.state_of("b", 1_130) == "done"  # the tick's other firings
    assert sorted(p.take()) == ["c"]  # the end of the input takes everything


def test_a_key_pending_again_is_not_done_for_a_later_timer_of_the_same_key():
    """The report timer of a key that was in the last batch and changed again since: its kept
    deltas belong to the new pending period and must stay for a crash (not cleared as done)."""
    p = Pending(flush_ms=100, start_ms=0)
    p.add(7, 10)
    assert list(p.take(100)) == [7] and p.state_of(7, 100) == "done"
    p.add(7, 120)
    assert p.state_of(7, 150) == "pending"  # e.g. its report timer at 150
    assert p.take(150) == {} and p.state_of(7, 150) == "pending"


def test_payloads_travel_with_their_keys():
    p = Pending(flush_ms=50, start_ms=0)
    p.add(1, 0)[1]["views"] = {"user_sequence"}
    assert p.add(1, 10)[1] == {"views": {"user_sequence"}}
    assert p.take(50) == {1: {"views": {"user_sequence"}}}
    with pytest.raises(ValueError, match="flush_ms"):
        Pending(flush_ms=0, start_ms=0)
