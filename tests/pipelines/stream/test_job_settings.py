"""The Flink settings the stream job sets itself (pipelines.stream.driver.job_settings)."""
from __future__ import annotations

from pipelines.stream.config import StreamConfig
from pipelines.stream.driver import SINK_CHECKPOINTS, job_settings

DIR = "execution.checkpointing.dir"


def test_a_following_job_checkpoints_to_files_not_to_the_jobmanager_heap(tmp_path):
    """Without a folder Flink keeps checkpoints in the JobManager's heap, 5 MiB a task at most:
    a following job (it checkpoints to commit its sinks) failed at its first checkpoint after
    ~100,000 events of 2,000 users (bench/stream_bench.py --events 100000)."""
    following = job_settings(StreamConfig(workdir=tmp_path, source=tmp_path, follow=True), submitted=False)
    assert following[DIR] == (tmp_path / SINK_CHECKPOINTS).resolve().as_uri()


def test_kept_checkpoints_a_bounded_run_and_a_cluster_choose_their_own_folder(tmp_path):
    kept = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True, checkpoints=tmp_path / "ck")
    bounded = StreamConfig(workdir=tmp_path, source=tmp_path)
    following = StreamConfig(workdir=tmp_path, source=tmp_path, follow=True)
    assert DIR not in job_settings(kept, submitted=False)  # environment() sets cfg.checkpoints itself
    assert DIR not in job_settings(bounded, submitted=False)  # no checkpoints at all
    assert DIR not in job_settings(following, submitted=True)  # the cluster's durable folder applies
