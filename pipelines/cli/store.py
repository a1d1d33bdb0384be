"""`recstream materialize`, `historical` and `online`: the feature store of a run folder."""
from __future__ import annotations

import json
from pathlib import Path

from features.errors import MissingInput
from pipelines.cli import flags
from pipelines.store.outages import online_errors, retried


def add(sub) -> None:
    m = sub.add_parser("materialize", help="gate every feature table; load the passing ones online")
    m.add_argument("--workdir", required=True)
    flags.caps(m)
    flags.online(m)
    m.set_defaults(func=materialize)

    h = sub.add_parser("historical", help="point-in-time features for an entity table (a training set)")
    h.add_argument("--workdir", required=True, help="a run folder the backfill wrote")
    h.add_argument("--entities", required=True,
                   help="Parquet (or .jsonl) with user_id, timestamp (ms) [, item_id, category_id]")
    h.add_argument("--out", required=True, help="Parquet file to write")
    flags.caps(h)
    h.add_argument("--feast", action="append", help="also join a Feast feature, e.g. item_content:vector")
    h.set_defaults(func=historical)

    o = sub.add_parser("online", help="read users' online features through Feast (statistics as of now)")
    o.add_argument("--workdir", required=True)
    o.add_argument("--now", type=int, help="ms; read the statistics as of this time (default: the clock)")
    flags.online(o)
    o.add_argument("user", nargs="+", help="raw user IDs")
    o.set_defaults(func=online)


def materialize(args, extra) -> int:
    from pipelines.store.feature_store import open_store
    from pipelines.store.publish import publish

    work, store = Path(args.workdir), flags.online_store(args)
    if not (work / "offline").is_dir():
        raise MissingInput(work / "offline", f"no backfilled run there; run `recstream backfill --output "
                           f"{work / 'offline'}` first (or check --workdir)")
    with online_errors(store.connection_string()):
        gates, rows = publish(open_store(work, store), work, flags.cap_values(args))
    for gate in gates:
        print(gate.summary())
    print(f"online rows: {rows}")
    return 0 if all(g.passed for g in gates) else 1


def historical(args, extra) -> int:
    from pipelines.store.historical import write_historical

    rows = write_historical(Path(args.workdir), Path(args.entities), Path(args.out), flags.cap_values(args),
                            args.feast or None)
    print(f"wrote {rows:,} rows with point-in-time features to {args.out}")
    return 0


def online(args, extra) -> int:
    from features.ids import stable_id
    from pipelines.store.feature_store import open_store, read_user_features

    users = [stable_id(u) for u in args.user]
    work, store = Path(args.workdir), flags.online_store(args)
    if not (work / "feast" / "registry.db").is_file():
        raise MissingInput(work / "feast" / "registry.db", f"no feature store there; run `recstream materialize "
                           f"--workdir {work}` first (or check --workdir)")
    with online_errors(store.connection_string()):
        got = retried(lambda: read_user_features(open_store(work, store), users, args.now),
                      store.connection_string(), "recstream online")
    print(json.dumps({raw: got[u] for raw, u in zip(args.user, users)}, indent=2, default=str))
    return 0
