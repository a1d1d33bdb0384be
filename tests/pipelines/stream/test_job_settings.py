"""The Flink settings the stream job sets itself (pipelines.stream.driver.job_settings)."""
from __future__ import annotations

import json
import time

import pytest

from features.errors import StateError
from pipelines.stream.config import StreamConfig
from pipelines.stream.driver import claim, job_settings, sink_checkpoints
from pipelines.stream.lock import JobLock

DIR = "execution.checkpointing.dir"


def test_a_following_job_checkpoints_to_files_not_to_the_jobmanager_heap(tmp_path):
    """Without a folder Flink keeps checkpoints in the JobManager's heap, 5 MiB a task at most:
    a following job (it checkpoints to commit its sinks) failed at its first checkpoint after
    ~100,000 events of 2,000 users (bench/stream_bench.py --events 100000)."""
    cfg = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True)
    folder = sink_checkpoints(cfg, submitted=False)
    assert folder.is_relative_to(tmp_path)
    assert job_settings(cfg, submitted=False)[DIR] == folder.resolve().as_uri()


def test_a_start_clears_what_killed_jobs_left_and_never_a_running_jobs_checkpoints(tmp_path):
    """A SIGKILLed job leaves its last checkpoint behind (Flink deletes them only when a job
    ends). A start removes its own job's and those of every job whose lock is free (the
    embedded broker's port, part of the job's identity, changes from run to run); never a
    running job's folder, nor anything when it restores (its checkpoint may be there)."""
    for name in "abc":
        (tmp_path / name).mkdir()
    a, b, c = (StreamConfig(workdir=tmp_path, source=tmp_path / n, follow=True) for n in "abc")
    assert len({sink_checkpoints(cfg, submitted=False) for cfg in (a, b, c)}) == 3
    own, running, killed = (sink_checkpoints(cfg, False) / "job" / "chk-3" for cfg in (a, b, c))
    for folder in (own, running, killed):
        folder.mkdir(parents=True)
    restoring = StreamConfig(workdir=tmp_path, source=tmp_path / "a", follow=True, restore=str(own))
    held_b = JobLock(b).acquire()
    try:
        held_a = JobLock(a)
        claim(held_a, restoring)
        held_a.release()
        assert own.is_dir() and killed.is_dir()
        claim(held_a, a)
        held_a.release()
        assert not own.exists() and not killed.exists() and running.is_dir()
        with pytest.raises(StateError, match="already runs"):
            claim(JobLock(b), b)
        assert running.is_dir()  # the lock is checked before anything is removed
    finally:
        held_b.release()


def test_kept_checkpoints_a_bounded_run_and_a_cluster_choose_their_own_folder(tmp_path):
    kept = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True, checkpoints=tmp_path / "ck")
    bounded = StreamConfig(workdir=tmp_path, source=tmp_path)
    following = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True)
    assert DIR not in job_settings(kept, submitted=False)  # environment() sets cfg.checkpoints itself
    assert DIR not in job_settings(bounded, submitted=False)  # no checkpoints at all
    assert DIR not in job_settings(following, submitted=True)  # the cluster's durable folder applies


def test_a_restore_needs_the_bucket_count_its_checkpoint_was_keyed_by(tmp_path):
    import os

    from features.errors import ConfigError
    from pipelines.stream.driver import LAYOUT, check_layout

    (tmp_path / "in").mkdir()
    checkpoints = tmp_path / "chk"

    def checkpoint(name: str, at_s: float):
        chk = checkpoints / "job" / name
        chk.mkdir(parents=True)
        (chk / "_metadata").write_bytes(b"")
        os.utime(chk / "_metadata", (at_s, at_s))
        return chk

    def cfg(**kw):
        return StreamConfig(workdir=tmp_path, source=tmp_path / "in", checkpoints=checkpoints, **kw)
    old = checkpoint("chk-1", 1_000)  # taken by the version before buckets: no layout
    with pytest.raises(ConfigError, match="keyed state by user.*start without restore"):
        check_layout(cfg(), old)
    check_layout(cfg(key_buckets=64), None)  # a fresh start notes its count, and since when
    first = checkpoint("chk-2", time.time())
    assert [layout["key_buckets"] for layout in json.loads((checkpoints / LAYOUT).read_text())["layouts"]] == [64]
    check_layout(cfg(key_buckets=64), first)
    with pytest.raises(ConfigError, match="holds state in 64 buckets, not 128; restore with key_buckets = 64"):
        check_layout(cfg(), first)
    time.sleep(0.01)
    check_layout(cfg(key_buckets=32), None)  # a later fresh start with another count, killed before its first checkpoint
    with pytest.raises(ConfigError, match="holds state in 64 buckets, not 32"):
        check_layout(cfg(key_buckets=32), first)  # the newest checkpoint is still the earlier run's
    with pytest.raises(ConfigError, match="keyed state by user"):
        check_layout(cfg(key_buckets=32), old)


@pytest.mark.parametrize("submitted", [False, True])
def test_checkpoints_stay_aligned_so_the_marks_come_before_the_barrier(tmp_path, submitted):
    """The keyed functions save their state at marks sent just before each barrier
    (pipelines.stream.batches): an unaligned barrier could overtake them."""
    cfg = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True)
    assert job_settings(cfg, submitted)["execution.checkpointing.unaligned.enabled"] == "false"
