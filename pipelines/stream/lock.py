"""One running stream job per input and online store.

Two jobs on the same Kafka group (or files folder) and the same online store would both
write every key and commit each other's offsets. The driver takes an exclusive ``flock`` on
a file in the run folder before it starts the job and holds it while the job runs; the
kernel releases it when the driver exits, however it exits (kill -9 included), and the job
dies with its driver (``bind_to_parent``), so a stale lock cannot outlive a job.
The lock is per machine: jobs on other machines sharing one Redis are not seen.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from features.errors import StateError
from pipelines.stream.config import StreamConfig


def job_input(cfg: StreamConfig) -> str:
    """What the job consumes, as a person names it."""
    if cfg.kafka is not None:
        return f"Kafka group {cfg.kafka.group_id} on topic {cfg.kafka.topic} at {cfg.kafka.bootstrap_servers}"
    return f"the folder {cfg.source.resolve()}"


DIGEST = re.compile(r"[0-9a-f]{16}")


def job_digest(cfg: StreamConfig) -> str:
    """A short name for the job's (online store, input): what the lock excludes twice of."""
    store = f"redis {cfg.online.redis_url}" if cfg.online.kind == "redis" else "sqlite"
    return hashlib.sha1(f"{store}|{job_input(cfg)}".encode()).hexdigest()[:16]


def lock_file(workdir: Path, digest: str) -> Path:
    return workdir / "feast" / f"stream-{digest}.lock"


@contextmanager
def while_free(workdir: Path, digest: str) -> Iterator[bool]:
    """True, holding digest's lock meanwhile, if no job holds it now; else False. (A process
    holding it itself gets False too: flock locks are per open file.)"""
    path = lock_file(workdir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


class JobLock:
    def __init__(self, cfg: StreamConfig):
        self.input = job_input(cfg)
        self.path = lock_file(cfg.workdir, job_digest(cfg))
        self.workdir = cfg.workdir
        self.file = None

    def acquire(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise StateError(f"a stream job ({holder}) already runs on {self.workdir} for {self.input}: stop it "
                             "first (two jobs would both write every key and commit each other's offsets)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None
