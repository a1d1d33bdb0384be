"""A backlog drained through a kill: --events synthetic events go into a
2-partition topic of the embedded broker; the stream job (every view, item statistics, examples
and accepted records on; checkpoints every --checkpoint-ms) follows it, is killed with SIGKILL
once it has read half (its driver and the JVM, whose mini-cluster TaskManager dies with it),
then restored from its last checkpoint. Once the group has committed the topic's end, every
online view must equal the naive oracle's (tests/conftest.naive_views, the parity tests' own),
or the script exits 1.

Prints the drain rate before the kill and after the restore, the job's resident memory
(driver + JVM, sampled each second), and the size of the last checkpoint per user.

    .venv/bin/python bench/stream_backlog.py [--events 1000000] [--users 500000] [--online sqlite|redis]
        [--checkpoint-ms 10000] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream_bench import online_stores  # noqa: E402
from features.schema import Event  # noqa: E402
from features.validate import parse_event  # noqa: E402
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker  # noqa: E402
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream  # noqa: E402
from pipelines.store.feature_store import apply, open_store, read_rows  # noqa: E402
from pipelines.stream.config import StreamConfig  # noqa: E402
from pipelines.stream.driver import StreamJobError, StreamProcess, latest_checkpoint  # noqa: E402
from tests.conftest import naive_views  # noqa: E402
from tests.helpers import views_differences  # noqa: E402


def synthetic_lines(events: int, users: int) -> tuple[list[str], int]:
    """About `events` lines over 30 days (sessions of ~9 events; a user has none, one or a few), and a
    validation clock after them."""
    syn = SyntheticConfig(users=users, items=max(5_000, events // 50), days=30, sessions_per_user=events / users / 9,
                          seed=5)
    lines = []
    for window, _ in tqdm(SyntheticStream(syn).windows(), total=30 * 24, desc="generating", unit="h", leave=False):
        lines += window
        if len(lines) >= events:
            break
    return lines[:events], syn.start_ms + 31 * DAY_MS


class Memory:
    """Resident memory of a process and its descendants, sampled each second."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.last = pid, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return  # the job is gone
            rss = 0
            for proc in family:
                try:
                    rss += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    pass  # a short-lived child ended between the listing and the reading
            self.last, self.peak = rss, max(self.peak, rss)
            self.stop.wait(1.0)


class Receipts:
    """The job's count receipts as (time, records read); a progress bar over the backlog."""

    def __init__(self, total: int, desc: str):
        self.marks: list[tuple[float, int]] = []
        self.bar = tqdm(total=total, desc=desc, unit="ev", unit_scale=True)

    def __call__(self, counts: dict) -> None:
        self.marks.append((time.perf_counter(), counts["read"]))
        self.bar.update(counts["read"] - self.bar.n)

    def rate(self) -> float:
        (t0, r0), (t1, r1) = self.marks[0], self.marks[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0


def first_half(cfg: StreamConfig, total: int) -> dict:
    """Run the job until it has read half the backlog and a checkpoint exists, then SIGKILL it
    (checked on every count receipt, and each second while none comes)."""
    job = StreamProcess(cfg).start()
    memory, receipts = Memory(job.pid), Receipts(total, "before the kill")
    killed: list[int] = []  # the job's processes, once killed

    def kill_when_due(*_) -> bool:
        read = receipts.marks[-1][1] if receipts.marks else 0
        if not killed and read >= total // 2 and latest_checkpoint(cfg.checkpoints) is not None:
            if read >= total:
                raise SystemExit(f"the job had read all {total:,} events by the time half were read and a checkpoint "
                                 "existed; "
                                 "give more --events or a shorter --checkpoint-ms")
            root = psutil.Process(job.pid)
            killed.extend([job.pid, *(p.pid for p in root.children(recursive=True))])
            root.send_signal(signal.SIGKILL)
        return False

    def progress(counts: dict) -> bool:
        receipts(counts)
        return kill_when_due()
    try:
        job.wait(progress, until=kill_when_due)
    except StreamJobError as e:
        if not killed:
            raise
        receipts.bar.close()
        print(f"killed at {receipts.marks[-1][1]:,} records read: {e}", file=sys.stderr)
    else:
        raise SystemExit("the job finished before it was killed")
    memory.stop.set()
    procs = []
    for pid in killed:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    if alive:
        raise SystemExit(f"processes of the killed job still run: {[p.pid for p in alive]}")
    return {"read_at_kill": receipts.marks[-1][1], "events_per_s": receipts.rate(), "rss_peak": memory.peak}


def restored(cfg: StreamConfig, client, total: int) -> dict:
    """Restore from the last checkpoint; stop once the group has committed the topic's end and no
    receipt came for 5 s."""
    ends = client.end_offsets(cfg.kafka.topic)
    if client.committed_offsets(cfg.kafka.group_id, cfg.kafka.topic) == ends:
        raise SystemExit("the killed job's last checkpoint already covers the whole topic: nothing to restore; "
                         "give more --events or a shorter --checkpoint-ms")
    receipts = Receipts(total, "after the restore")
    started = time.perf_counter()
    job = StreamProcess(replace(cfg, restore="latest")).start()
    memory = Memory(job.pid)

    def caught_up() -> bool:
        quiet = time.perf_counter() - (receipts.marks[-1][0] if receipts.marks else started) > 5
        return quiet and client.committed_offsets(cfg.kafka.group_id, cfg.kafka.topic) == ends
    counts = job.wait(receipts, until=caught_up)
    memory.stop.set()
    receipts.bar.close()
    return {"read": counts["read"], "events_per_s": receipts.rate(), "rss_peak": memory.peak,
            "rss_end": memory.last, "seconds": time.perf_counter() - started}


def differences(store, expected: dict, at_ms: int, chunk: int = 5_000) -> list[str]:
    """views_differences over every key of the oracle, read through Feast in chunks."""
    out = []
    for view, rows in tqdm(expected.items(), desc="checking views", leave=False):
        keys = list(rows)
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            online = {view: dict(zip(part, read_rows(store, view, part)))}
            out += views_differences(online, {view: {k: rows[k] for k in part}}, at_ms)
    return out


def directory_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=500_000,
                   help="the generator's population: about 10^5 of 500,000 have events among 10^6 (~10 each)")
    p.add_argument("--checkpoint-ms", type=int, default=10_000)
    p.add_argument("--online", choices=("sqlite", "redis"), default="sqlite")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    lines, now_ms = synthetic_lines(args.events, args.users)
    valid = [e for e in (parse_event(line, now_ms) for line in lines) if isinstance(e, Event)]
    with tempfile.TemporaryDirectory(prefix="stream-backlog-") as folder, running_broker() as broker, \
            online_stores(args.online) as (online, _), contextlib.closing(broker.client()) as client:
        work = Path(folder)
        kafka = broker.kafka(group_id="backlog")
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.produce(kafka.topic, event_records(lines, now_ms))
        store = open_store(work, online)
        apply(store, work)
        cfg = StreamConfig(workdir=work, kafka=kafka, follow=True, online=online, now_ms=now_ms,
                           checkpoints=work / "chk", checkpoint_interval_ms=args.checkpoint_ms)
        before = first_half(cfg, len(lines))
        after = restored(cfg, client, len(lines))
        oracle = naive_views(valid, cfg.sequence.max_len, cfg.recent_len, cfg.category_len)
        wrong = differences(store, oracle, max(e.timestamp for e in valid) + 1)
        chk = latest_checkpoint(cfg.checkpoints)
        users = len(oracle["user_stats"])
        out = {"events": len(lines), "valid": len(valid), "users": users, "items": len(oracle["item_stats"]),
               "online": args.online, "checkpoint_ms": args.checkpoint_ms,
               "read_at_kill": before["read_at_kill"], "events_per_s_before_kill": round(before["events_per_s"]),
               "read_after_restore": after["read"], "events_per_s_after_restore": round(after["events_per_s"]),
               "restore_to_caught_up_s": round(after["seconds"], 1),
               "rss_peak_mib": round(max(before["rss_peak"], after["rss_peak"]) / 2**20),
               "rss_end_mib": round(after["rss_end"] / 2**20),
               "checkpoint_bytes_per_user": round(directory_bytes(chk) / users) if chk else None,
               "views_checked": sum(len(rows) for rows in oracle.values()), "views_wrong": len(wrong)}
    print(json.dumps(out), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if wrong:
        print("\n".join(wrong[:10]), file=sys.stderr)
        raise SystemExit(f"{len(wrong)} online rows differ from the oracle after the kill and restore")
    return out


if __name__ == "__main__":
    main()
