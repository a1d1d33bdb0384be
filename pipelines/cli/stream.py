"""`recstream stream`: the PyFlink job on the mini-cluster here, or submitted to a Flink cluster."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.cli import flags
from pipelines.config import ConfigError, from_dict, read_toml


def add(sub) -> None:
    s = sub.add_parser("stream", help="PyFlink job: Kafka topic or event files -> online features, examples, "
                                      "dead letters (docs/streaming.md); `stream stop JOB` stops a cluster's job")
    s.add_argument("action", nargs="?", choices=("run", "stop"), default="run",
                   help="run (default) the job; stop: stop JOB on the cluster (--savepoint DIR: with a savepoint "
                        "to --restore from)")
    s.add_argument("job", nargs="?", help="stop: the job ID (`recstream cluster status` lists them)")
    s.add_argument("--savepoint", help="stop: folder for the savepoint (default: cancel without one)")
    s.add_argument("--config", help="a TOML file of StreamConfig settings; the flags below override it")
    s.add_argument("--workdir", help="run folder whose Feast store receives the updates")
    s.add_argument("--source", help="folder of JSON-lines files (instead of --kafka)")
    s.add_argument("--kafka", metavar="HOST:PORT[,...]", help="Kafka bootstrap servers (instead of --source)")
    s.add_argument("--topic", help="events topic (default events)")
    s.add_argument("--group-id", help="consumer group (default recstream-stream)")
    s.add_argument("--dead-letter-topic", help="rejected and late records (default events-dead-letters)")
    s.add_argument("--examples-topic", help="labeled examples (default training-examples)")
    s.add_argument("--accepted-topic", help="every accepted record as it came (default events-accepted)")
    s.add_argument("--starting-offsets", choices=("committed", "earliest", "latest"))
    s.add_argument("--fetch-max-wait-ms", type=int, help="the source's fetch.max.wait.ms (default Kafka's 500; "
                   "give the embedded broker 50: it answers a fetch only when this wait is up)")
    s.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                   help="more client properties, repeatable; VALUE may be ${ENV_VAR} (keep secrets there)")
    s.add_argument("--dead-letter", help="files source: folder for dead letters (default WORKDIR/stream_rejected)")
    s.add_argument("--follow", action="store_true", help="keep reading until Ctrl-C (default: read what is there)")
    flags.caps(s, defaults=False)
    s.add_argument("--allowed-lateness-ms", type=int)
    s.add_argument("--out-of-orderness-ms", type=int)
    s.add_argument("--idleness-ms", type=int)
    s.add_argument("--checkpoints", help="folder for checkpoints (turns checkpointing on)")
    s.add_argument("--checkpoint-interval-ms", type=int)
    s.add_argument("--restore", help="'latest' (newest checkpoint in --checkpoints) or a chk-N folder")
    s.add_argument("--parallelism", type=int)
    s.add_argument("--report-every", type=int, help="records per count receipt")
    s.add_argument("--flush-ms", type=int, help="following: the longest a changed user row waits for its online "
                   "write (default 100)")
    s.add_argument("--item-flush-ms", type=int, help="following: the same for item_stats rows (default 250)")
    s.add_argument("--python-mode", choices=("thread", "process"),
                   help="PyFlink's Python execution mode: in the JVM (thread, the default here) or in Python "
                        "workers (process, the default with --target cluster)")
    s.add_argument("--bundle-ms", type=int, help="process mode only: the Python bundle time (default 100)")
    s.add_argument("--no-examples", action="store_true", help="no training-example stream")
    s.add_argument("--no-item-stats", action="store_true", help="leave item_stats to the backfill (faster)")
    s.add_argument("--no-accepted-log", action="store_true", help="no accepted-record output")
    flags.online(s, default=None)
    s.set_defaults(func=run)
    # Where the job runs (pipelines/stream/cluster/submit.py).
    s.add_argument("--target", choices=("local", "cluster"), default="local",
                   help="local: a PyFlink mini-cluster here (default); cluster: submit to --jobmanager (the "
                        "job's driver stays here until the job ends)")
    s.add_argument("--jobmanager", help="host:port of a running Flink cluster's REST endpoint (with --target "
                                        "cluster; default: the one `recstream cluster start` left in runs/flink)")
    s.add_argument("--detached", action="store_true", help="with --target cluster: print the job ID and return; "
                                                           "the job runs until `recstream stream stop JOB`")


def run(args, extra) -> int:
    from pipelines.stream.config import StreamConfig
    from pipelines.stream.driver import run_stream

    if args.action == "stop":
        return stop(args)
    if args.job:
        raise ConfigError(f"unexpected argument {args.job!r}: a job ID goes with `recstream stream stop JOB`")
    data = stream_settings(args)
    if args.target == "cluster":
        # A session cluster runs job after job in one TaskManager JVM, and on Java 17 a second
        # thread-mode Python job there fails to load its native library (pemja; Flink's reflective
        # fix reads a field Java 17 lacks): process mode, unless python_mode is set.
        data.setdefault("python_mode", "process")
    cfg = from_dict(StreamConfig, data)
    if args.target != "local" or args.jobmanager or args.detached:
        return on_cluster(cfg, args)
    print(json.dumps(run_stream(cfg), indent=2))
    return 0


def stream_settings(args) -> dict:
    """StreamConfig's settings: the --config file's, then the flags given on top."""
    data: dict = read_toml(Path(args.config)) if args.config else {}
    flags = {"workdir": args.workdir, "source": args.source, "dead_letter": args.dead_letter,
             "allowed_lateness_ms": args.allowed_lateness_ms, "out_of_orderness_ms": args.out_of_orderness_ms,
             "idleness_ms": args.idleness_ms, "checkpoints": args.checkpoints,
             "checkpoint_interval_ms": args.checkpoint_interval_ms, "restore": args.restore,
             "parallelism": args.parallelism, "report_every": args.report_every, "flush_ms": args.flush_ms,
             "item_flush_ms": args.item_flush_ms, "bundle_ms": args.bundle_ms, "python_mode": args.python_mode}
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.follow:
        data["follow"] = True
    if args.no_examples:
        data["examples"] = False
    if args.no_item_stats:
        data["item_stats"] = False
    if args.no_accepted_log:
        data["accepted_log"] = False
    if args.max_len is not None:
        data["sequence"] = {**data.get("sequence", {}), "max_len": args.max_len}
    for name in ("recent_len", "category_len"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    online = {k: v for k, v in (("kind", args.online), ("redis_url", args.redis_url)) if v is not None}
    if online:
        data["online"] = {**data.get("online", {}), **online}
    kafka = {"bootstrap_servers": args.kafka, "topic": args.topic, "group_id": args.group_id,
             "dead_letter_topic": args.dead_letter_topic, "examples_topic": args.examples_topic,
             "accepted_topic": args.accepted_topic,
             "starting_offsets": args.starting_offsets, "fetch_max_wait_ms": args.fetch_max_wait_ms}
    kafka = {k: v for k, v in kafka.items() if v is not None}
    for prop in args.kafka_property or []:
        key, eq, value = prop.partition("=")
        if not eq or not key:
            raise ConfigError(f"--kafka-property takes KEY=VALUE (e.g. security.protocol=SASL_SSL), got {prop!r}")
        kafka.setdefault("properties", dict(data.get("kafka", {}).get("properties", {})))[key] = value
    if kafka:
        data["kafka"] = {**data.get("kafka", {}), **kafka}
    if "workdir" not in data:
        raise ConfigError("recstream stream needs --workdir (or workdir in --config)")
    return data


def on_cluster(cfg, args) -> int:
    """--target cluster: package the job and submit it to a running Flink cluster (pipelines/stream/cluster/submit.py)."""
    from pipelines.cli.cluster import jobmanager_address
    from pipelines.stream.cluster.distribution import FlinkJobError
    from pipelines.stream.cluster.submit import submit_stream, submit_stream_detached

    if args.target != "cluster":
        raise ConfigError("--jobmanager and --detached go with --target cluster")
    address = jobmanager_address(args.jobmanager)
    try:
        if args.detached:
            job = submit_stream_detached(address, cfg)
            print(job)  # alone on stdout: JOB=$(recstream stream ... --detached)
            print(f"job {job} runs on {address}\n  status: recstream cluster status   stop: recstream stream stop "
                  f"{job} [--savepoint DIR]", file=sys.stderr)
            return 0
        client = submit_stream(address, cfg)
    except FlinkJobError as err:
        print(f"recstream stream: error: {err}", file=sys.stderr)
        return 1
    print(f"job {client.job_id} runs on {address}; its driver runs here until it ends (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        code = client.wait()
    except KeyboardInterrupt:
        code = 130
    client.stop()
    print(client.output())  # the client's lines, then the driver's counts
    return 0 if code == 0 else 1


def stop(args) -> int:
    """`recstream stream stop JOB [--savepoint DIR]`: cancel the job, or stop it with a savepoint."""
    from pipelines.cli.cluster import jobmanager_address
    from pipelines.stream.cluster.rest import cancel_job, stop_with_savepoint

    if not args.job:
        raise ConfigError("recstream stream stop needs the job ID (recstream cluster status lists them)")
    address = jobmanager_address(args.jobmanager)
    if args.savepoint:
        target = args.savepoint if "://" in args.savepoint else Path(args.savepoint).resolve().as_uri()  # s3://...
        where = stop_with_savepoint(address, args.job, target).removeprefix("file:")
        print(where)  # alone on stdout: SAVEPOINT=$(recstream stream stop JOB --savepoint DIR)
        print(f"job {args.job} stopped with a savepoint at {where}\n  restart: recstream stream --target cluster "
              f"--detached --restore {where} ...", file=sys.stderr)
    else:
        cancel_job(address, args.job)
        print(f"job {args.job} canceled on {address}", file=sys.stderr)
    return 0
