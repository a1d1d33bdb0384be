"""`recstream broker start|stop|status`, `recstream topics create|list` and `recstream produce`:
the embedded broker and any Kafka, without writing Python against internal modules."""
from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

from features.errors import ConfigError, MissingInput

BROKER_DIR = "runs/broker"
CHUNK = 5_000  # records per produce call


def add(sub) -> None:
    b = sub.add_parser("broker", help="the embedded Kafka-protocol broker (Tansu, in memory) on 127.0.0.1")
    b.add_argument("action", choices=("start", "stop", "status", "address"),
                   help="address: print its host:port alone (KAFKA=$(recstream broker address))")
    b.add_argument("--workdir", default=BROKER_DIR, help=f"where its state and log live (default {BROKER_DIR})")
    b.add_argument("--port", type=int, help="start: the port (default: a free one)")
    b.set_defaults(func=broker)

    t = sub.add_parser("topics", help="create or list Kafka topics")
    t.add_argument("action", choices=("create", "list", "lag"),
                   help="lag: a consumer group's committed offsets against each topic's end")
    t.add_argument("names", nargs="*", help="create: topic names (default: the stream job's four topics)")
    t.add_argument("--partitions", type=int, default=1, help="create: partitions of each new topic (default 1)")
    t.add_argument("--group", default="recstream-stream", help="lag: the consumer group (default: the stream job's)")
    t.add_argument("--wait", type=float, metavar="SECONDS",
                   help="lag: wait up to this long for a lag of 0 (exit 1 if it stays above)")
    _kafka_flag(t)
    t.set_defaults(func=topics)

    p = sub.add_parser("produce", help="replay raw JSON-lines events into a topic, keyed by user, with event times")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="glob(s) of JSON-lines files, comma-separated")
    source.add_argument("--run", help="a run folder `recstream ingest` wrote: its held-back raw/stream/*.jsonl")
    p.add_argument("--topic", default="events")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (default: as fast as the broker takes)")
    p.add_argument("--limit", type=int, help="stop after this many events")
    _kafka_flag(p)
    p.set_defaults(func=produce)


def _kafka_flag(p) -> None:
    p.add_argument("--kafka", help=f"bootstrap servers host:port (default: the broker `recstream broker start` "
                                   f"left in {BROKER_DIR})")
    p.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                   help="a client property as the stream job takes it (security.protocol, sasl.mechanism, "
                        "sasl.jaas.config, ...), repeatable; VALUE may be ${ENV_VAR} (keep secrets there)")


def _client(args, address: str):
    """A KafkaClient on ``address`` with the --kafka-property settings, as librdkafka names them."""
    from pipelines.embedded.kafka import KafkaClient
    from pipelines.stream.config import KafkaSettings

    props = {}
    for prop in args.kafka_property or []:
        key, eq, value = prop.partition("=")
        if not eq or not key:
            raise ConfigError("--kafka-property", f"takes KEY=VALUE (e.g. security.protocol=SASL_SSL), got {prop!r}")
        props[key] = value
    return KafkaClient(address, properties=KafkaSettings(bootstrap_servers=address, properties=props)
                       .librdkafka_properties())


def _bootstrap(args) -> str:
    from pipelines.daemons import address

    return address(args.kafka, Path(BROKER_DIR), "--kafka",
                   "give host:port, or start the embedded broker first: recstream broker start")


def broker(args, extra) -> int:
    from pipelines import daemons

    return daemons.command(Path(args.workdir), "broker", args.action, lambda folder: _start(folder, args.port),
                           _show, grace_s=10)


def _start(folder: Path, port: int | None):
    from pipelines.daemons import Daemon
    from pipelines.embedded.broker import FETCH_MAX_WAIT_MS, Broker

    folder.mkdir(parents=True, exist_ok=True)
    b = Broker(port, log=(folder / "tansu.log").resolve(), detached=True).start()
    print(f"broker up at {b.bootstrap_servers} (pid {b.pid}; in memory: its topics go when it stops)\n"
          f"  use it: --kafka {b.bootstrap_servers} --fetch-max-wait-ms {FETCH_MAX_WAIT_MS}\n"
          f"  stop it: recstream broker stop --workdir {folder}")
    return Daemon("broker", {"tansu": b.pid}, b.bootstrap_servers, str(b.log), "tansu")


def _show(state) -> None:
    from pipelines.embedded.kafka import KafkaClient

    print(f"broker up at {state.address} (pid {state.pids['tansu']}, since {state.started})")
    _print_topics(KafkaClient(state.address))


def topics(args, extra) -> int:
    from pipelines.stream.config import KafkaSettings

    address = _bootstrap(args)
    if args.action == "list":
        _print_topics(_client(args, address))
        return 0
    if args.action == "lag":
        return _lag(_client(args, address), args.names or [KafkaSettings(bootstrap_servers=address).topic],
                    args.group, args.wait)
    if args.partitions < 1:
        raise ConfigError("--partitions", f"must be >= 1, got {args.partitions}")
    k = KafkaSettings(bootstrap_servers=address)
    names = args.names or [k.topic, k.dead_letter_topic, k.examples_topic, k.accepted_topic]
    with _client(args, address) as client:
        for name in names:
            made = client.create_topic(name, args.partitions if name == k.topic or args.names else 1)
            print(f"{name}: {'created' if made else 'exists already'}")
    return 0


def _print_topics(client) -> None:
    with client:
        found = client.topics()
        if not found:
            print(f"no topics on {client.bootstrap}; create them: recstream topics create --kafka {client.bootstrap}")
        for name, parts in found.items():
            ends = client.end_offsets(name)
            print(f"{name}: {parts} partition{'s' if parts > 1 else ''}, {sum(ends.values()):,} records")


def _lag(client, names: list[str], group: str, wait_s: float | None) -> int:
    """Print each topic's lag for the group (end - committed, summed over partitions); with
    wait_s, poll until every lag is 0 or the time is up."""
    deadline = time.monotonic() + (wait_s or 0)
    with client:
        while True:
            lags = {}
            for name in names:
                ends, done = client.end_offsets(name), client.committed_offsets(group, name)
                lags[name] = (sum(max(0, end - max(done.get(p, -1), 0)) for p, end in ends.items()),
                              sum(max(c, 0) for c in done.values()), sum(ends.values()))
            if wait_s is None or all(lag == 0 for lag, _, _ in lags.values()) or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    for name, (lag, committed, end) in lags.items():
        print(f"{name}: lag {lag:,} (group {group} committed {committed:,} of {end:,})")
    behind = [n for n, (lag, _, _) in lags.items() if lag]
    if wait_s is not None and behind:
        print(f"recstream topics lag: {', '.join(behind)} still behind after {wait_s:.0f} s; is the job running "
              f"(recstream cluster status)?", file=sys.stderr)
        return 1
    return 0


def produce(args, extra) -> int:
    from tqdm import tqdm

    from pipelines.embedded.broker import event_records

    files = _files(args)
    if args.rate < 0 or (args.limit is not None and args.limit < 0):
        raise ConfigError("--rate/--limit", "must be >= 0")
    address, sent, start = _bootstrap(args), 0, time.monotonic()
    with _client(args, address) as client, tqdm(desc=f"produce to {args.topic}", unit=" events", file=sys.stderr,
                                              disable=not sys.stderr.isatty()) as bar:
        client.partitions(args.topic)  # a missing topic is named before anything is read
        for chunk in _chunks(files, args.limit, max(1, min(CHUNK, int(args.rate))) if args.rate else CHUNK):
            sent += client.produce(args.topic, event_records(chunk))
            bar.update(len(chunk))
            if args.rate:
                time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    seconds = time.monotonic() - start
    print(f"produced {sent:,} events to {args.topic} on {address} in {seconds:.1f} s "
          f"({sent / max(seconds, 1e-9):,.0f}/s) from {len(files)} file{'s' if len(files) > 1 else ''}")
    return 0


def _files(args) -> list[str]:
    if args.run:
        pattern = str(Path(args.run) / "raw" / "stream" / "*.jsonl")
        files = sorted(glob.glob(pattern))
        if not files:
            raise MissingInput(pattern, "no held-back events there; run `recstream ingest --workdir RUN` first")
        return files
    files = sorted({f for g in args.file.split(",") if g for f in glob.glob(g)})
    if not files or any(Path(f).is_dir() for f in files):
        raise MissingInput(args.file, "give JSON-lines files (a glob that matches files, not folders)")
    return files


def _chunks(files: list[str], limit: int | None, size: int):
    """Lists of raw lines (bytes, newline stripped, blank lines skipped), ``size`` at a time."""
    chunk, total = [], 0
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                if limit is not None and total >= limit:
                    break
                chunk.append(line)
                total += 1
                if len(chunk) == size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk

