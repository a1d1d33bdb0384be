"""`recstream`: one command, subcommands over importable functions."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from pipelines.config import ConfigError, from_dict, load_toml
from pipelines.progress import quiet_libraries


def _demo(args, extra) -> int:
    from pipelines.demo import DemoConfig, run_demo

    cfg = load_toml(DemoConfig, Path(args.config)) if args.config else DemoConfig()
    overrides = {"workdir": args.workdir, "dataset": args.dataset, "path": args.path}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if args.users:
        cfg = dataclasses.replace(cfg, synthetic=dataclasses.replace(cfg.synthetic, users=args.users))
    if args.steps:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
    summary = run_demo(cfg)
    return 0 if summary.get("model_version") else 1


def _train(args, extra) -> int:
    from pipelines.train_job import run_train

    result = run_train(Path(args.workdir), args.model, steps=args.steps, seed=args.seed, search=args.search,
                       search_k=args.search_k, sparse_lr=args.sparse_lr,
                       progress=lambda step, loss: print(f"step {step:>5}  loss {loss:.4f}", flush=True))
    print(json.dumps({k: v for k, v in result.items() if k != "state_dict"}, indent=2, default=str))
    for split in ("valid", "test"):
        m = result.get(split, {})
        if "gauc" in m:
            print(f"{split:>5}: AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}   (popularity "
                  f"AUC {m['popularity']['auc']:.4f}  GAUC {m['popularity']['gauc']:.4f})")
    return 0


def _ingest(args, extra) -> int:
    from pipelines.ingest import ingest
    from pipelines.sources.synthetic import SyntheticConfig

    synthetic = from_dict(SyntheticConfig, json.loads(args.synthetic)) if args.synthetic else SyntheticConfig()
    got = ingest(args.dataset, Path(args.path) if args.path else None, synthetic, Path(args.workdir),
                 args.stream_fraction)
    print(json.dumps(vars(got), indent=2))
    return 0


def _backfill(args, extra) -> int:
    from features.labels import LabelPolicy
    from features.sequence import SequencePolicy
    from pipelines.backfill import BackfillConfig, run_backfill

    cfg = BackfillConfig(input=args.input, output=args.output, catalog=args.catalog,
                         sequence=SequencePolicy(max_len=args.max_len), recent_len=args.recent_len,
                         category_len=args.category_len, stats_as_of_ms=args.stats_as_of,
                         labels_until_ms=args.labels_until,
                         labels=LabelPolicy(kind=args.labels, negatives=args.negatives))
    print(json.dumps(run_backfill(cfg, extra), indent=2))
    return 0


def _online_store(args):
    """The --online / --redis-url flags as an OnlineStore (Redis's URL also from $RECSTREAM_REDIS_URL)."""
    from pipelines.feature_store import OnlineStore

    return OnlineStore(kind=args.online or "sqlite", redis_url=args.redis_url)


def _materialize(args, extra) -> int:
    from pipelines.feature_store import open_store
    from pipelines.publish import publish

    work = Path(args.workdir)
    caps = {"user_sequence": args.max_len, "user_recent": args.recent_len, "user_category_sequence": args.category_len}
    gates, online = publish(open_store(work, _online_store(args)), work, caps)
    for gate in gates:
        print(gate.summary())
    print(f"online rows: {online}")
    return 0 if all(g.passed for g in gates) else 1


def _stream(args, extra) -> int:
    from pipelines.stream import StreamConfig, run_stream

    cfg = from_dict(StreamConfig, stream_settings(args))
    if args.target != "local" or args.jobmanager:
        return _stream_on_cluster(cfg, args)
    print(json.dumps(run_stream(cfg), indent=2))
    return 0


def stream_settings(args) -> dict:
    """StreamConfig's settings: the --config file's, then the flags given on top."""
    import tomllib

    data: dict = tomllib.loads(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    flags = {"workdir": args.workdir, "source": args.source, "dead_letter": args.dead_letter,
             "allowed_lateness_ms": args.allowed_lateness_ms, "out_of_orderness_ms": args.out_of_orderness_ms,
             "idleness_ms": args.idleness_ms, "checkpoints": args.checkpoints,
             "checkpoint_interval_ms": args.checkpoint_interval_ms, "restore": args.restore,
             "parallelism": args.parallelism, "report_every": args.report_every, "flush_ms": args.flush_ms,
             "item_flush_ms": args.item_flush_ms, "bundle_ms": args.bundle_ms}
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
             "starting_offsets": args.starting_offsets}
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


def _stream_on_cluster(cfg, args) -> int:
    """--target cluster: package the job and submit it to a running Flink cluster (pipelines/flink_cluster.py)."""
    from pipelines.flink_cluster import FlinkJobError, submit_stream

    if args.target != "cluster" or not args.jobmanager:
        raise ValueError("--target cluster and --jobmanager host:port (the cluster's REST address, e.g. "
                         "localhost:8081) go together")
    try:
        client = submit_stream(args.jobmanager, cfg)
    except FlinkJobError as err:
        print(f"recstream stream: error: {err}", file=sys.stderr)
        return 1
    print(f"job {client.job_id} runs on {args.jobmanager}; its driver runs here until it ends (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        code = client.wait()
    except KeyboardInterrupt:
        code = 130
    client.stop()
    print(client.output())  # the client's lines, then the driver's counts
    return 0 if code == 0 else 1


def _historical(args, extra) -> int:
    from pipelines.historical import write_historical

    caps = {"user_sequence": args.max_len, "user_recent": args.recent_len, "user_category_sequence": args.category_len}
    rows = write_historical(Path(args.workdir), Path(args.entities), Path(args.out), caps, args.feast or None)
    print(f"wrote {rows:,} rows with point-in-time features to {args.out}")
    return 0


def _online(args, extra) -> int:
    from features.ids import stable_id
    from pipelines.feature_store import open_store, read_user_features

    users = [stable_id(u) for u in args.user]
    got = read_user_features(open_store(Path(args.workdir), _online_store(args)), users, args.now)
    print(json.dumps({raw: got[u] for raw, u in zip(args.user, users)}, indent=2, default=str))
    return 0


def _embed(args, extra) -> int:
    from pipelines.embed import EmbedConfig, dataset_content, run_embed
    from pipelines.encoders import EncoderSpec
    from pipelines.feature_store import apply, materialize_item_vectors, open_store
    from pipelines.sources.synthetic import SyntheticConfig

    work = Path(args.workdir)
    catalog = args.catalog
    if args.dataset:
        synthetic = from_dict(SyntheticConfig, json.loads(args.synthetic)) if args.synthetic else SyntheticConfig()
        catalog = str(dataset_content(args.dataset, Path(args.path) if args.path else None, work, synthetic))
    spec = from_dict(EncoderSpec, json.loads(args.encoder)) if args.encoder else EncoderSpec()
    if args.version:
        spec = dataclasses.replace(spec, version=args.version)
    if args.no_image:
        spec = dataclasses.replace(spec, image_model="none")
    cfg = EmbedConfig(workdir=str(work), catalog=catalog, image_root=args.image_root, encoder=spec,
                      batch_size=args.batch_size, serve=True if args.serve else None, device=args.device)
    counts = run_embed(cfg, extra)
    if not args.no_materialize:
        store = open_store(work)
        apply(store, work)  # points item_content at the serving version
        counts["materialized_items"] = materialize_item_vectors(store, work)
    print(json.dumps(counts, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run every component end to end on the embedded defaults")
    d.add_argument("--config", help="a TOML file of DemoConfig settings")
    d.add_argument("--workdir", help="run folder (default runs/demo)")
    d.add_argument("--dataset", help="synthetic | ml-latest-small | ml-1m | ml-100k | taobao | csv | parquet")
    d.add_argument("--path", help="the dataset's folder or file")
    d.add_argument("--users", type=int, help="synthetic users")
    d.add_argument("--steps", type=int, help="training steps")
    d.set_defaults(func=_demo)

    i = sub.add_parser("ingest", help="write a dataset as raw event files + catalog into a run folder")
    i.add_argument("--dataset", default="synthetic")
    i.add_argument("--path")
    i.add_argument("--workdir", required=True)
    i.add_argument("--stream-fraction", type=float, default=0.1)
    i.add_argument("--synthetic", help='SyntheticConfig as JSON, e.g. \'{"users": 1000}\'')
    i.set_defaults(func=_ingest)

    b = sub.add_parser("backfill", help="Beam backfill; unknown flags go to Beam's PipelineOptions")
    b.add_argument("--input", required=True, help="glob of raw JSON-lines files (several: comma-separated)")
    b.add_argument("--output", required=True, help="folder for the offline tables")
    b.add_argument("--catalog", help="hashed catalog Parquet (needed for --labels next_item)")
    b.add_argument("--max-len", type=int, default=200, help="lifelong sequence cap")
    b.add_argument("--recent-len", type=int, default=50)
    b.add_argument("--category-len", type=int, default=50)
    b.add_argument("--stats-as-of", type=int, help="ms; write user/item stats as of this time")
    b.add_argument("--labels-until", type=int,
                   help="ms; the data's end: impressions whose click window runs past it get no label")
    b.add_argument("--labels", default="impression_click", choices=["impression_click", "next_item"])
    b.add_argument("--negatives", type=int, default=1)
    b.set_defaults(func=_backfill)

    m = sub.add_parser("materialize", help="gate every feature table; load the passing ones online")
    m.add_argument("--workdir", required=True)
    m.add_argument("--max-len", type=int, default=200, help="the lifelong sequence cap the backfill used")
    m.add_argument("--recent-len", type=int, default=50)
    m.add_argument("--category-len", type=int, default=50)
    _online_flags(m)
    m.set_defaults(func=_materialize)

    s = sub.add_parser("stream", help="PyFlink job: Kafka topic or event files -> online features, examples, "
                                      "dead letters (docs/streaming.md)")
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
    s.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                   help="more client properties, repeatable; VALUE may be ${ENV_VAR} (keep secrets there)")
    s.add_argument("--dead-letter", help="files source: folder for dead letters (default WORKDIR/stream_rejected)")
    s.add_argument("--follow", action="store_true", help="keep reading until Ctrl-C (default: read what is there)")
    s.add_argument("--max-len", type=int, help="lifelong sequence cap (default 200)")
    s.add_argument("--recent-len", type=int, help="user_recent's length (default 50; the backfill's)")
    s.add_argument("--category-len", type=int, help="user_category_sequence's length (default 50; the backfill's)")
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
    s.add_argument("--item-flush-ms", type=int, help="following: the same for item_stats rows (default 1000)")
    s.add_argument("--bundle-ms", type=int, help="Python bundle time: state commits and hand-overs (default 100)")
    s.add_argument("--no-examples", action="store_true", help="no training-example stream")
    s.add_argument("--no-item-stats", action="store_true", help="leave item_stats to the backfill (faster)")
    s.add_argument("--no-accepted-log", action="store_true", help="no accepted-record output")
    _online_flags(s, default=None)
    s.set_defaults(func=_stream)
    # Where the job runs (pipelines/flink_cluster.py).
    s.add_argument("--target", choices=("local", "cluster"), default="local",
                   help="local: a PyFlink mini-cluster here (default); cluster: submit to --jobmanager (the "
                        "job's driver stays here until the job ends)")
    s.add_argument("--jobmanager", help="host:port of a running Flink cluster's REST endpoint (with --target cluster)")

    e = sub.add_parser("embed", help="Beam job: item catalog -> versioned multimodal item vectors -> Feast; "
                                     "unknown flags go to Beam's PipelineOptions")
    e.add_argument("--workdir", required=True, help="run folder (vectors go to WORKDIR/offline/item_embeddings)")
    e.add_argument("--catalog", help="Parquet catalog: item_id (hashed), text, image_ref "
                                     "(default WORKDIR/catalog.parquet)")
    e.add_argument("--dataset", help="build the catalog from a dataset instead: synthetic | ml-latest-small | "
                                     "ml-1m | ml-100k (MovieLens: titles, genres and tags)")
    e.add_argument("--path", help="the dataset's folder")
    e.add_argument("--synthetic", help="SyntheticConfig as JSON, with --dataset synthetic")
    e.add_argument("--image-root", help="folder that relative image_ref paths are under (default: the catalog's)")
    e.add_argument("--version", help="encoder version to embed into (default: EncoderSpec's)")
    e.add_argument("--encoder", help='EncoderSpec as JSON, e.g. \'{"version": "mm-v2", "dim": 256}\'')
    e.add_argument("--no-image", action="store_true", help="text only (image_model none)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="cpu", help="torch device for the encoders (cpu, cuda, ...)")
    e.add_argument("--serve", action="store_true", help="serve this version afterwards (default: only the first)")
    e.add_argument("--no-materialize", action="store_true", help="skip feast apply + materialize")
    e.set_defaults(func=_embed)

    t = sub.add_parser("train", help="train a ranker or retriever on a backfilled run (time-split train/valid/test)")
    t.add_argument("--workdir", required=True, help="run folder holding offline/examples and offline/behavior_log")
    t.add_argument("--model", required=True, choices=["mean", "din", "tin", "single", "comirec-sa", "mind"])
    t.add_argument("--search", default="none", choices=["none", "category", "cosine", "dare"],
                   help="rankers: lifelong search unit")
    t.add_argument("--search-k", type=int, default=0, help="behaviors the search unit keeps")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--sparse-lr", type=float, help="rankers: the tables' RowWiseAdagrad learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

    h = sub.add_parser("historical", help="point-in-time features for an entity table (a training set)")
    h.add_argument("--workdir", required=True, help="a run folder the backfill wrote")
    h.add_argument("--entities", required=True,
                   help="Parquet (or .jsonl) with user_id, timestamp (ms) [, item_id, category_id]")
    h.add_argument("--out", required=True, help="Parquet file to write")
    h.add_argument("--max-len", type=int, default=200)
    h.add_argument("--recent-len", type=int, default=50)
    h.add_argument("--category-len", type=int, default=50)
    h.add_argument("--feast", action="append", help="also join a Feast feature, e.g. item_content:vector")
    h.set_defaults(func=_historical)

    o = sub.add_parser("online", help="read users' online features through Feast (statistics as of now)")
    o.add_argument("--workdir", required=True)
    o.add_argument("--now", type=int, help="ms; read the statistics as of this time (default: the clock)")
    _online_flags(o)
    o.add_argument("user", nargs="+", help="raw user IDs")
    o.set_defaults(func=_online)
    return p


def _online_flags(p, default: str | None = "sqlite") -> None:
    p.add_argument("--online", choices=("sqlite", "redis"), default=default,
                   help="online store: the run folder's SQLite (default) or Redis")
    p.add_argument("--redis-url", help="host:port[,db=N] with --online redis (default $RECSTREAM_REDIS_URL)")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("RECSTREAM_LOG", "WARNING"))
    quiet_libraries()
    args, extra = parser().parse_known_args(argv)
    if extra and args.command not in ("backfill", "embed"):
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"recstream {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
