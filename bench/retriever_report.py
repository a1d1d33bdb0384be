"""Retrieval quality: Recall@50 / HR@50 / NDCG@50 of popularity (over the training slice, and over
the recent slice: the validation period just before the test), single, comirec-sa and mind,
mean +- std over seeds, on the planted synthetic stream, on ml-latest-small and on the Taobao
slice (when present).

    .venv/bin/python bench/retriever_report.py [--seeds 0 1 2] [--steps 300] [--users 300] [--days 20]
        [--only synthetic|ml-latest-small|taobao] [--json out.json]

Records go through features.validate.parse_event, the behavior log and next-item examples through
features.offline (the functions the backfill runs). Split by time over all examples:
train on the first 80%, validate on the next 10%, test on the last 10%. Each model keeps the
training state with the best validation Recall@50 (checked every steps/5); the test slice is
read once, after training. A slice's users are those with an interaction in it and a history
before it; truth = their distinct items in the slice; user vectors are computed as of the
slice's start. On the real data items a user already interacted with are excluded from
retrieval; on the synthetic stream re-clicks are real, so nothing is excluded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.ids import stable_ids  # noqa: E402
from features.labels import LabelPolicy  # noqa: E402
from features.offline import behavior_log, examples  # noqa: E402
from features.negatives import ItemPool  # noqa: E402
from features.schema import Event, events_to_table  # noqa: E402
from features.sequence import SequencePolicy  # noqa: E402
from features.validate import parse_event  # noqa: E402

K_EVAL = 50
FAR_FUTURE_MS = 2**62  # validation clock for historical records: nothing is "in the future"


@dataclass
class Tables:
    log: pa.Table  # the sorted behavior log
    examples: pa.Table  # next-item positives (EXAMPLE_SCHEMA)
    item_ids: np.ndarray  # the candidate catalog, hashed IDs
    category_ids: np.ndarray


def load_tables(records: Iterable, catalog: pa.Table, negatives: int = 0, seed: int = 0,
                sampling: str = "uniform") -> Tables:
    """Raw records + raw catalog (item_id, category_id) -> log, next-item examples, hashed catalog.
    Impressions are skipped (they are not behaviors); a rejected record is an error here.
    ``negatives``: catalog items drawn (seeded) per positive as of its time (features/negatives.py,
    ``sampling``), labeled 0, for the rankers."""
    events = []
    for raw in records:
        if isinstance(raw, str) and '"impression"' in raw:
            continue
        event = parse_event(raw, now_ms=FAR_FUTURE_MS)
        if not isinstance(event, Event):
            raise ValueError(f"record rejected ({event.reason}): {event.raw[:200]}")
        events.append(event)
    table = events_to_table(events)
    item_ids = stable_ids(catalog.column("item_id"))
    cats = catalog.column("category_id").to_pylist()
    known = np.array([c not in (None, "") for c in cats], dtype=bool)
    category_ids = np.zeros(len(cats), np.int64)  # no category: UNKNOWN_CATEGORY, as validation gives
    if known.any():
        category_ids[known] = stable_ids([c for c, k in zip(cats, known) if k])
    pool = ItemPool.from_table(table, item_ids)
    ex = examples(table, LabelPolicy(kind="next_item", negatives=negatives, seed=seed, sampling=sampling), pool)
    return Tables(behavior_log(table, SequencePolicy()), ex, item_ids, category_ids)


def synthetic_tables(users: int, days: int, sessions_per_user: float, seed: int = 0):
    """The planted stream (no drift) as Tables, and the stream (its ``interests`` are the truth)."""
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

    stream = SyntheticStream(SyntheticConfig(users=users, days=days, sessions_per_user=sessions_per_user,
                                             drift_per_day=0.0, seed=seed))
    lines = (line for window, _ in stream.windows() for line in window)
    return load_tables(lines, stream.catalog()), stream


def movielens_tables(folder: Path) -> Tables:
    from pipelines.sources.datasets import movielens_catalog, movielens_events

    return load_tables(movielens_events(folder), movielens_catalog(folder))


def taobao_tables(folder: Path, negatives: int = 0, sampling: str = "uniform") -> Tables:
    """The Taobao slice; its catalog is each item's category as the behaviors give it."""
    from pipelines.sources.datasets import taobao_events

    pairs: dict = {}
    for r in taobao_events(folder):
        if r.get("item_id") is not None:
            pairs.setdefault(r["item_id"], r.get("category_id"))
    catalog = pa.table({"item_id": list(pairs), "category_id": list(pairs.values())})
    return load_tables(taobao_events(folder), catalog, negatives=negatives, sampling=sampling)


@dataclass
class Slice:
    """The users evaluated on [start, end), their truth and the items to exclude."""

    start: int
    users: np.ndarray
    truth: list[np.ndarray]
    exclude: tuple[np.ndarray, np.ndarray] | None


def eval_slice(t: Tables, start: int, end: int, exclude_seen: bool) -> Slice:
    ex = t.examples
    times = ex.column("timestamp").to_numpy()
    inside = (times >= start) & (times < end)
    users, items = ex.column("user_id").to_numpy()[inside], ex.column("item_id").to_numpy()[inside]
    log_users, log_times = t.log.column("user_id").to_numpy(), t.log.column("timestamp").to_numpy()
    known = np.unique(log_users[log_times < start])
    keep = np.isin(users, known)
    users, items = users[keep], items[keep]
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    uniq, first = np.unique(users, return_index=True)
    truth = [np.unique(x) for x in np.split(items, first[1:])] if len(uniq) else []
    exclude = None
    if exclude_seen:
        before = (log_times < start) & np.isin(log_users, uniq)
        exclude = (np.searchsorted(uniq, log_users[before]), t.log.column("item_id").to_numpy()[before])
    return Slice(start, uniq, truth, exclude)


def evaluate_state(state, cfg, t: Tables, s: Slice) -> dict[str, float]:
    from trainers.retrieval.metrics import retrieval_metrics
    from trainers.retrieval.train import item_vectors, retrieve, user_vectors

    vecs = user_vectors(state, cfg, s.users, np.full(len(s.users), s.start), t.log)
    ids, _ = retrieve(vecs, item_vectors(state, cfg, t.item_ids, t.category_ids), t.item_ids, K_EVAL, s.exclude)
    return retrieval_metrics(ids, s.truth, K_EVAL)


def popularity(train_items: np.ndarray, t: Tables, s: Slice) -> dict[str, float]:
    from trainers.retrieval.metrics import popularity_vectors, retrieval_metrics
    from trainers.retrieval.train import retrieve

    users, items = popularity_vectors(train_items, t.item_ids, len(s.users))
    ids, _ = retrieve(users, items, t.item_ids, K_EVAL, s.exclude)
    return retrieval_metrics(ids, s.truth, K_EVAL)


def run_dataset(name: str, t: Tables, seeds: list[int], steps: int, exclude_seen: bool, table_size: int) -> dict:
    from trainers.retrieval.train import RetrievalConfig, train_retriever

    times = t.examples.column("timestamp").to_numpy()
    t1, t2 = (int(np.quantile(times, q)) for q in (0.8, 0.9))
    train = t.examples.filter(pa.array(times < t1))
    val, test = eval_slice(t, t1, t2, exclude_seen), eval_slice(t, t2, int(times.max()) + 1, exclude_seen)
    out = {"dataset": name, "train_examples": train.num_rows, "val_users": len(val.users),
           "test_users": len(test.users), "items": len(t.item_ids), "methods": {}}
    pop = popularity(train.column("item_id").to_numpy(), t, test)
    out["methods"]["popularity"] = {"test": [pop] * len(seeds)}
    recent = t.examples.filter(pa.array((times >= t1) & (times < t2)))  # the slice just before the test slice
    out["methods"]["popularity (recent)"] = {"test": [popularity(recent.column("item_id").to_numpy(), t, test)]
                                             * len(seeds)}
    for model in ("single", "comirec-sa", "mind"):
        runs = []
        for seed in seeds:
            cfg = RetrievalConfig(model=model, steps=steps, batch_size=256, seed=seed, threads=1,
                                  item_table_size=table_size, validate_every=max(1, steps // 5))
            start = time.perf_counter()
            result = train_retriever(train, t.log, cfg,
                                     validate=lambda state: evaluate_state(state, cfg, t, val)[f"recall@{K_EVAL}"])
            metrics = evaluate_state(result.state_dict, cfg, t, test)
            runs.append({**metrics, "best_step": result.best_step, "val_recall": max(v for _, v in result.validation),
                         "seconds": time.perf_counter() - start, "samples_per_s": result.samples_per_s})
            print(f"{name} {model} seed={seed}: {metrics}", file=sys.stderr)
        out["methods"][model] = {"test": runs}
    return out


def table(results: list[dict]) -> str:
    lines = ["| dataset | method | Recall@50 | HR@50 | NDCG@50 |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        for method, m in r["methods"].items():
            cells = []
            for key in (f"recall@{K_EVAL}", f"hr@{K_EVAL}", f"ndcg@{K_EVAL}"):
                values = np.array([run[key] for run in m["test"]])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
            lines.append(f"| {r['dataset']} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--users", type=int, default=300, help="synthetic users")
    p.add_argument("--days", type=int, default=20, help="synthetic days")
    p.add_argument("--movielens", default=str(REPO.parent / "shared" / "data" / "ml-latest-small"))
    p.add_argument("--taobao", default=str(REPO.parent / "shared" / "data" / "taobao-userbehavior-slice"))
    p.add_argument("--only", choices=("synthetic", "ml-latest-small", "taobao"), help="run one dataset")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    started = time.perf_counter()
    results = []
    if args.only in (None, "synthetic"):
        data, _ = synthetic_tables(args.users, args.days, sessions_per_user=2.0 * args.days)
        results.append(run_dataset(f"synthetic ({args.users} users, {args.days} days)", data, args.seeds, args.steps,
                                   exclude_seen=False, table_size=50_000))
    # Real data: items a user already interacted with are excluded (a movie is rated once; a
    # Taobao slice's repeat views would otherwise be most of the truth).
    for name, folder, load, size in (("ml-latest-small", Path(args.movielens), movielens_tables, 200_000),
                                     ("taobao slice", Path(args.taobao), taobao_tables, 20_000)):
        if args.only not in (None, name.split()[0]):
            continue
        if folder.exists():
            results.append(run_dataset(name, load(folder), args.seeds, args.steps, exclude_seen=True,
                                       table_size=size))
        else:
            print(f"skipping {name}: {folder} is absent", file=sys.stderr)
    print(table(results))
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
