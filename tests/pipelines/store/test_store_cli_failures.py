"""`recstream online` and `materialize` against a hung Redis, a stopped Redis and a mistyped
run folder: each ends in bounded time with one line that names the input and the fix, and a
mistyped folder is not created."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.embedded.redis import RedisServer
from pipelines.store.feature_store import apply, open_store
from pipelines.store.outages import with_timeouts
from tests.helpers import redis_server_or_skip

pytestmark = pytest.mark.engine
RECSTREAM = str(Path(sys.executable).parent / "recstream")


def run(*args: str) -> tuple[int, list[str], float]:
    started = time.monotonic()
    done = subprocess.run([RECSTREAM, *args], capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr.strip().splitlines(), time.monotonic() - started


def test_timeouts_are_added_unless_the_address_sets_them():
    assert with_timeouts("h:1") == "h:1,socket_connect_timeout=5,socket_timeout=10"
    assert with_timeouts("h:1,db=2,socket_timeout=0.5") == "h:1,db=2,socket_timeout=0.5,socket_connect_timeout=5"


def test_a_hung_then_a_stopped_redis_ends_online_with_one_line(tmp_path):
    redis_server_or_skip()
    server = RedisServer().start()
    try:
        apply(open_store(tmp_path), tmp_path)
        os.kill(server.pid, signal.SIGSTOP)  # hung: accepts connections, never answers
        code, lines, took = run("online", "--workdir", str(tmp_path), "--online", "redis", "--redis-url",
                                f"{server.address},password=s3cret", "42")
        os.kill(server.pid, signal.SIGCONT)
        assert code == 2 and len(lines) == 1, lines
        assert f"Redis at {server.address}" in lines[0] and "Timeout" in lines[0] and "s3cret" not in lines[0]
        assert took < 60
    finally:
        address = server.address
        server.close()
    code, lines, _ = run("online", "--workdir", str(tmp_path), "--online", "redis", "--redis-url", address, "42")
    assert code == 2 and len(lines) == 2, lines  # a stopped server is retried (a restart), then one line
    assert lines[0].startswith(f"recstream online: Redis at {address} refused") and "retrying for up to 5 s" in lines[0]
    assert f"Redis at {address}" in lines[1] and "ConnectionError" in lines[1], lines


def test_online_waits_out_a_redis_restart(tmp_path):
    redis_server_or_skip()
    server = RedisServer().start()
    apply(open_store(tmp_path), tmp_path)
    server.stop()
    reader = subprocess.Popen([RECSTREAM, "online", "--workdir", str(tmp_path), "--online", "redis", "--redis-url",
                               server.address, "42"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RECSTREAM_REDIS_RETRY_S": "120"})
    try:
        said = reader.stderr.readline()  # the reader met the stopped server and says it retries
        assert f"Redis at {server.address} refused" in said and "retrying for up to 120 s" in said, said
        server.start()  # the same port
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
        server.close()
    assert reader.returncode == 0, err
    assert "user 42 " in out and "not in the online store" in out


def test_a_mistyped_run_folder_is_named_and_not_created(tmp_path):
    typo = tmp_path / "tpyo"
    for command in ("materialize", "online"):
        code, lines, _ = run(command, "--workdir", str(typo), *(["42"] if command == "online" else []))
        assert code == 2 and len(lines) == 1 and str(typo) in lines[0] and "first" in lines[0], lines
    assert not typo.exists()
