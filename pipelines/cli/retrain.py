"""`recstream retrain` (the continuous-training loop) and `recstream models` (the registry)."""
from __future__ import annotations

import json
from pathlib import Path


def add(sub) -> None:
    r = sub.add_parser("retrain", help="continuous training: windows from the stream's topics (or folders) -> "
                                       "data gate -> evaluate, train, model gate -> registry (docs/retrain.md)")
    r.add_argument("--config", help="a TOML file of RetrainConfig settings; the flags below override it")
    r.add_argument("--workdir", help="run folder (a backfilled run: its behavior log, registry and feature store)")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one window, then exit (for cron, Airflow, a CronJob)")
    mode.add_argument("--follow", action="store_true", help="keep going until SIGTERM or Ctrl-C (checkpoint, exit 0)")
    r.add_argument("--max-windows", type=int, help="stop after this many windows")
    r.add_argument("--kafka", metavar="HOST:PORT[,...]", help="read the stream job's topics on this cluster "
                                                              "(default: the folders WORKDIR/stream_examples, "
                                                              "WORKDIR/stream_accepted)")
    r.add_argument("--examples-topic", help="default training-examples")
    r.add_argument("--accepted-topic", help="default events-accepted")
    r.add_argument("--examples", choices=("topic", "next_item"),
                   help="topic: the stream's labeled examples; next_item: built from accepted behaviors")
    r.add_argument("--window-size", type=int, help="records per window (default 2000)")
    r.add_argument("--min-records", type=int, help="the fewest records a window closes with when idle")
    r.add_argument("--models", help="comma-separated: ranker,retriever (default both)")
    r.set_defaults(func=retrain)

    m = sub.add_parser("models", help="the model registry (MLflow): list, show, promote, rollback, history")
    actions = m.add_subparsers(dest="action", required=True)
    for name, help_, version in (("list", "every version, the champion starred", None),
                                 ("show", "a version's metadata: config, window, gates, metrics", "?"),
                                 ("promote", "make a version the champion (its gates are not rerun)", ""),
                                 ("rollback", "the champion before the current one serves again", None),
                                 ("history", "every register, promote, reject and rollback: who, when, why", None)):
        a = actions.add_parser(name, help=help_)
        a.add_argument("model", nargs="?" if name == "list" else None, help="ranker | retriever")
        if version is not None:
            a.add_argument("version", nargs=version or None, help="a version number (show: default the champion)")
        a.add_argument("--workdir", required=True, help="the run folder (its registry is WORKDIR/registry)")
        if name in ("promote", "rollback"):
            a.add_argument("--why", default="", help="the reason, kept in the history")
        if name == "rollback":
            a.add_argument("--to", help="this version instead of the previous champion")
        a.add_argument("--json", action="store_true", help="print JSON")
        a.set_defaults(func=models)


def retrain(args, extra) -> int:
    from pipelines.cli.flags import given
    from pipelines.config import ConfigError, from_dict, merged, read_toml
    from pipelines.retrain.config import RetrainConfig
    from pipelines.retrain.loop import run_retrain

    data = read_toml(Path(args.config)) if args.config else {}
    flags = {"workdir": args.workdir, "examples": args.examples,
             "window": {"size": args.window_size, "min_records": args.min_records},
             "models": args.models.split(",") if args.models else None}
    if args.kafka:
        flags["kafka"] = {"bootstrap_servers": args.kafka, "examples_topic": args.examples_topic,
                          "accepted_topic": args.accepted_topic}
    data = merged(data, given(flags))
    if "workdir" not in data:
        raise ConfigError("recstream retrain needs --workdir (or workdir in --config)")
    cfg = from_dict(RetrainConfig, data)
    records = run_retrain(cfg, follow=args.follow, max_windows=1 if args.once else args.max_windows)
    for record in records:
        print(window_line(record), flush=True)
    return 0


def window_line(record: dict) -> str:
    """One line per window for people: its number, what it held, the gates and decisions."""
    parts = [f"window {record['window']}: {record['records']:,} records ({record['duplicates']} repeats)"]
    gate = record["data_gate"]
    if not gate["passed"]:
        parts.append(f"QUARANTINED: {', '.join(gate['reasons'])}")
    for kind, m in record["models"].items():
        online = m["online"]
        metric = (f"online AUC {online.get('auc', float('nan')):.4f}" if kind == "ranker"
                  else f"online recall@50 {online.get('recall@50', float('nan')):.4f}")
        decision = (f"v{m['version']} promoted" if m.get("decision") == "promoted"
                    else f"rejected ({', '.join(m['gate']['reasons'])})")
        parts.append(f"{kind}: {metric}, {decision}")
    return "; ".join(parts)


def models(args, extra) -> int:
    from pipelines.retrain import serving

    registry = serving.registry_of(Path(args.workdir))
    if args.action == "list":
        rows = [v for name in ([args.model] if args.model else registry.models()) for v in registry.versions(name)]
        print(json.dumps([v.__dict__ for v in rows], indent=2) if args.json else _table(rows))
        return 0
    if args.action == "history":
        events = registry.history(args.model)
        print(json.dumps(events, indent=2) if args.json else "\n".join(
            f"{e['at']}  {e['action']:<8} {e['version'] or '-':>4} (was {e['previous'] or '-'})  {e['who']}: "
            f"{e['why']}" for e in events))
    elif args.action == "show":
        _, meta = registry.load(args.model, args.version)
        print(json.dumps(meta, indent=2, default=str))
    elif args.action == "promote":
        serving.promote(Path(args.workdir), args.model, args.version, why=args.why)
        print(f"{args.model}: version {args.version} is the champion")
    else:
        version = serving.rollback(Path(args.workdir), args.model, to=args.to, why=args.why)
        print(f"{args.model}: rolled back; version {version} is the champion")
    return 0


def _table(rows) -> str:
    if not rows:
        return "no registered versions"
    lines = [f"{'model':<10} {'version':>7}  {'created (UTC)':<25} {'window':>6}  champion"]
    for v in rows:
        lines.append(f"{v.model:<10} {v.version:>7}  {v.created:<25} {v.tags.get('window', '-'):>6}  "
                     f"{'*' if v.champion else ''}")
    return "\n".join(lines)
