"""Small builders shared by the engine tests: a tiny synthetic run folder."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream


def backfilled_run(work: Path, users: int = 40, days: int = 4, seed: int = 0, bad_fraction: float = 0.0,
                   stats_as_of_ms: int | None = None) -> dict:
    """Synthetic events -> raw files -> Beam backfill into work/offline; returns the counts."""
    stream = SyntheticStream(SyntheticConfig(users=users, days=days, seed=seed, bad_fraction=bad_fraction))
    write_json_lines((line for lines, _ in stream.windows() for line in lines), work / "raw")
    return run_backfill(BackfillConfig(input=str(work / "raw" / "*.jsonl"), output=str(work / "offline"),
                                       stats_as_of_ms=stats_as_of_ms))


def online_views(store, expected: dict[str, dict]) -> dict[str, dict]:
    """The online rows of every key of expected (naive_views' shape), by view; None where absent."""
    from pipelines.store.feature_store import read_rows

    return {view: dict(zip(rows, read_rows(store, view, list(rows)))) for view, rows in expected.items()}


def views_differences(online: dict[str, dict], expected: dict[str, dict], at_ms: int) -> list[str]:
    """What differs between online rows and expected rows: sequence fields exactly; statistics by
    their state (newest event, live tiles, lifetime counts) and by their values read at at_ms
    (rows written at different as-of times agree on what serving reads later). Empty if equal."""
    from features import stats
    from feature_repo.definitions import SEQUENCE_FIELDS

    out = []
    for view, rows in expected.items():
        for key, want in rows.items():
            have = online[view].get(key)
            if have is None:
                out.append(f"{view} {key}: not online")
            elif view.endswith("_stats"):
                state = {f: list(have[f] or []) if f.startswith("tile_") else have[f] for f in stats.STATE_FIELDS}
                if state != {f: want[f] for f in stats.STATE_FIELDS}:
                    out.append(f"{view} {key}: state {state} != {[want[f] for f in stats.STATE_FIELDS]}")
                got, exp = stats.read_at(have, at_ms), stats.read_at(want, at_ms)
                if any(abs(got[n] - exp[n]) > 1e-9 for n in exp):
                    out.append(f"{view} {key}: values at {at_ms} {got} != {exp}")
            else:
                got = {f: list(have[f]) if isinstance(have[f], (list, tuple)) else have[f] for f in SEQUENCE_FIELDS}
                if got != {f: want[f] for f in SEQUENCE_FIELDS}:
                    out.append(f"{view} {key}: {got} != {want}")
    return out


def redis_server_or_skip() -> str:
    """The redis-server binary, or skip the calling test with the reason (for pytest fixtures)."""
    import pytest

    from pipelines.embedded.redis import DEFAULT_BINARY, redis_server_binary

    binary = redis_server_binary()
    if binary is None:
        pytest.skip(f"redis-server is not installed ({DEFAULT_BINARY} is absent): apt-get install -y redis-server")
    return binary


def sequence_row(user_id: int, items: list[int], last_event_ms: int) -> dict:
    """A consistent user_sequence row of these items, the last at last_event_ms."""
    n = len(items)
    return {"user_id": user_id, "seq_item_ids": list(items), "seq_category_ids": [1] * n, "seq_event_types": [2] * n,
            "seq_timestamps": [last_event_ms - (n - 1 - i) for i in range(n)], "seq_length": n,
            "last_event_ms": last_event_ms}


def tcp_listeners(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, local address, port) of every listening TCP socket of these processes (from /proc)."""
    import ipaddress
    import os

    listening: dict[str, tuple[str, int]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints 32-bit words little-endian
            addr = ipaddress.ip_address(raw) if width == 8 else ipaddress.IPv6Address(raw)
            listening[fields[9]] = (str(getattr(addr, "ipv4_mapped", None) or addr), int(hex_port, 16))
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                out.append((pid, *listening[target[8:-1]]))
    return out


def produce_in_batches(bootstrap: str, topic: str, records: list) -> int:
    """Send records (pipelines.embedded.kafka.Record) to partition 0 of ``topic`` the way a busy
    producer does: all queued before one flush, with a long linger, so the batches are cut by
    size only (the same way every run) and the last one holds many records. Returns the end
    offset the broker then lists for the partition."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10_000})
    for rec in records:
        producer.produce(topic, value=rec.value, key=rec.key, partition=0, timestamp=rec.timestamp or 0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "produce-in-batches"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        consumer.close()


def terminal_popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen of a command as a terminal starts it: in a process group of its own (Ctrl-C is SIGINT
    to the group), with SIGINT handled even when this test run was started with it ignored (nohup,
    a background job): an ignored signal stays ignored across exec, a handled one is reset."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, start_new_session=True, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)
