"""The Flink settings the stream job sets itself (pipelines.stream.driver.job_settings)."""
from __future__ import annotations

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


def test_jobs_on_other_inputs_checkpoint_apart_and_a_start_clears_only_its_own(tmp_path):
    """A SIGKILLed job leaves its last checkpoint behind (Flink deletes them only when a job
    ends); the next start under the same lock removes it, and never a running job's folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = StreamConfig(workdir=tmp_path, source=tmp_path / "a", follow=True)
    b = StreamConfig(workdir=tmp_path, source=tmp_path / "b", follow=True)
    assert sink_checkpoints(a, submitted=False) != sink_checkpoints(b, submitted=False)
    stale, running = sink_checkpoints(a, submitted=False) / "job-1" / "chk-3", sink_checkpoints(b, False) / "job-2"
    stale.mkdir(parents=True)
    running.mkdir(parents=True)
    held_b = JobLock(b).acquire()
    try:
        held_a = JobLock(a)
        claim(held_a, a)
        held_a.release()
        assert not stale.exists() and running.is_dir()
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
