"""`recstream materialize`, `historical` and `online`: the feature store of a run folder."""
from __future__ import annotations

import json
import sys
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
                   help="Parquet (or .jsonl) with user_id, timestamp (ms) [, item_id, category_id]: raw IDs "
                        "as in the data (or the run's hashed IDs)")
    h.add_argument("--out", required=True, help="Parquet file to write")
    flags.caps(h)
    h.add_argument("--feast", action="append", help="also join a Feast feature, e.g. item_content:vector")
    h.set_defaults(func=historical)

    o = sub.add_parser("online", help="read users' online features through Feast (statistics as of now)")
    o.add_argument("--workdir", required=True)
    o.add_argument("--now", type=int, help="ms; read the statistics as of this time (default: the clock)")
    flags.online(o)
    o.add_argument("--json", action="store_true", help="every feature as JSON (default: a short block per user)")
    o.add_argument("user", nargs="+", help="raw user IDs (or the run's hashed IDs)")
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
    print("online rows: " + (", ".join(f"{view} {n:,}" for view, n in rows.items()) or "none (no table passed)"))
    return 0 if all(g.passed for g in gates) else 1


def historical(args, extra) -> int:
    from pipelines.store.historical import write_historical

    notes: list[str] = []
    rows = write_historical(Path(args.workdir), Path(args.entities), Path(args.out), flags.cap_values(args),
                            args.feast or None, notes)
    for note in notes:
        print(f"recstream historical: note: {note}", file=sys.stderr)
    print(f"wrote {rows:,} rows with point-in-time features to {args.out}")
    return 0


def online(args, extra) -> int:
    import time

    from features.id_dictionary import IdDictionary
    from pipelines.store.feature_store import open_store, read_user_features
    from pipelines.store.online_view import UserRead, as_json, as_text

    work, store = Path(args.workdir), flags.online_store(args)
    ids = IdDictionary.load(work, "user_id")
    # A raw ID is hashed (features.ids); one of the run's hashed IDs is read as it is.
    hashed, given = ids.resolve([int(u) if u.isascii() and u.isdigit() and int(u) in ids.raw_of else u
                                 for u in args.user])
    users = [int(u) for u in hashed]
    if not (work / "feast" / "registry.db").is_file():
        raise MissingInput(work / "feast" / "registry.db", f"no feature store there; run `recstream materialize "
                           f"--workdir {work}` first (or check --workdir)")
    now = int(time.time() * 1000) if args.now is None else args.now
    with online_errors(store.connection_string()):
        got = retried(lambda: read_user_features(open_store(work, store), users, now),
                      store.connection_string(), "recstream online")
    reads = [UserRead(typed, u, ids.raw_of.get(u, None if g else typed), bool(g), got[u])
             for typed, u, g in zip(args.user, users, given)]
    items = IdDictionary.load(work, "item_id")
    if args.json:
        print(json.dumps(as_json(reads, items), indent=2, default=str))
    else:
        print(as_text(reads, items, now))
    return 0
