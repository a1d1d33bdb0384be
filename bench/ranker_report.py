"""Rankers on synthetic data with PLANTED recency: mean-pool vs DIN vs TIN, AUC and GAUC over seeds.

    .venv/bin/python bench/ranker_report.py [--users 2000] [--steps 400] [--seeds 0 1 2]
                                            [--models mean din dien tin sdim] [--sparse-lr 0.01 0.1]
                                            [--search none --search-k 8]

How the data is planted (``planted_recency``): every user has ``history`` behaviors, each in a
uniformly drawn category; the last ``recent`` of them fall within ten minutes before the user's
request time, the others between 1 and 30 days before it. At the request the user is shown
``targets`` items: half from a category among the RECENT behaviors, half from a category that
only OLDER behaviors have. The click probability is ``p_click[0]`` for the first kind and
``p_click[1]`` for the second: a click depends on whether a recent behavior shares the target's
category, and older behaviors of the same category do not count. Items carry no signal of their
own. Examples are split by time (the latest 20% of requests are the evaluation slice), and each
seed draws new data and a new initialization. Every model gets the same TrainConfig budget, at
each of the table learning rates given (none is selected: every cell is printed). GAUC is the
per-user AUC over each user's 4 targets (trainers.metrics.gauc); the popularity baseline is the
items' smoothed click rate in the training slice (items carry no signal: ~0.5).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.labels import EXAMPLE_SCHEMA  # noqa: E402
from features.tables import BEHAVIOR_LOG_SCHEMA  # noqa: E402
from trainers.item_vectors import ItemVectors  # noqa: E402

DAY_MS = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 UTC


@dataclass(frozen=True)
class Planted:
    train: pa.Table  # EXAMPLE_SCHEMA
    eval: pa.Table
    log: pa.Table  # BEHAVIOR_LOG_SCHEMA
    vectors: ItemVectors  # each item's vector: its category's direction plus noise (for search = "cosine")
    items: int
    categories: int


def planted_recency(users: int = 2000, categories: int = 12, items_per_category: int = 40, history: int = 30,
                    recent: int = 3, targets: int = 4, p_click: tuple[float, float] = (0.85, 0.15),
                    seed: int = 0, vector_dim: int = 16) -> Planted:
    """The planted-recency data described in the module docstring. Item IDs are 1..categories *
    items_per_category (item i is in category 1 + (i - 1) // items_per_category)."""
    if not 0 < recent < history or targets < 2 or categories < 2:
        raise ValueError("need 0 < recent < history, targets >= 2 and categories >= 2")
    rng = np.random.default_rng(seed)
    old = history - recent
    request = T0 + 40 * DAY_MS + np.arange(users, dtype=np.int64) * 60_000  # one request per user, a minute apart
    cats = rng.integers(1, categories + 1, size=(users, history))
    ages = np.concatenate([np.sort(rng.integers(DAY_MS, 30 * DAY_MS, size=(users, old)), axis=1)[:, ::-1],
                           np.sort(rng.integers(10_000, 600_000, size=(users, recent)), axis=1)[:, ::-1]], axis=1)
    times = request[:, None] - ages  # ascending within a user
    items = (cats - 1) * items_per_category + rng.integers(1, items_per_category + 1, size=cats.shape)
    log = pa.Table.from_pydict({
        "user_id": np.repeat(np.arange(users, dtype=np.int64), history), "timestamp": times.ravel(),
        "event_id": [f"{u}-{i}" for u in range(users) for i in range(history)],
        "item_id": items.ravel().astype(np.int64), "category_id": cats.ravel().astype(np.int64),
        "event_type_code": np.full(users * history, 2, dtype=np.int32)}, schema=BEHAVIOR_LOG_SCHEMA)

    in_recent = np.zeros((users, categories + 1), dtype=bool)
    in_old = np.zeros((users, categories + 1), dtype=bool)
    np.put_along_axis(in_recent, cats[:, old:], True, axis=1)
    np.put_along_axis(in_old, cats[:, :old], True, axis=1)
    only_old = in_old & ~in_recent
    only_old[~only_old.any(axis=1), 1:] = ~in_recent[~only_old.any(axis=1), 1:]  # rare: every old category is recent
    half = targets // 2
    target_cats = np.concatenate([_draw(rng, in_recent, half), _draw(rng, only_old, targets - half)], axis=1)
    is_recent = np.arange(targets)[None, :] < half
    clicked = rng.random((users, targets)) < np.where(is_recent, p_click[0], p_click[1])
    target_items = (target_cats - 1) * items_per_category + rng.integers(1, items_per_category + 1,
                                                                           size=target_cats.shape)
    examples = pa.Table.from_pydict({
        "user_id": np.repeat(np.arange(users, dtype=np.int64), targets),
        "item_id": target_items.ravel().astype(np.int64), "category_id": target_cats.ravel().astype(np.int64),
        "timestamp": np.repeat(request, targets), "label": clicked.ravel().astype(np.int8)}, schema=EXAMPLE_SCHEMA)
    cut = request[int(0.8 * users)]
    split = examples.column("timestamp").to_numpy() < cut
    n_items = categories * items_per_category
    return Planted(examples.filter(pa.array(split)), examples.filter(pa.array(~split)), log,
                   _vectors(rng, n_items, items_per_category, categories, vector_dim), n_items, categories)


def _draw(rng: np.random.Generator, allowed: np.ndarray, n: int) -> np.ndarray:
    """Per row, n draws (with replacement) among the columns where ``allowed`` is True."""
    weights = allowed / allowed.sum(axis=1, keepdims=True)
    cdf = np.cumsum(weights, axis=1)
    u = rng.random((allowed.shape[0], n))
    return np.minimum((cdf[:, None, :] < u[:, :, None]).sum(axis=2), allowed.shape[1] - 1)


def _vectors(rng: np.random.Generator, n_items: int, per_category: int, categories: int, dim: int) -> ItemVectors:
    base = rng.normal(size=(categories, dim))
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    vecs = base[(ids - 1) // per_category] + 0.3 * rng.normal(size=(n_items, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    table = torch.zeros(n_items + 1, dim)
    table[1:] = torch.from_numpy(vecs.astype(np.float32))
    return ItemVectors("planted-recency", ids, table)


def run(args: argparse.Namespace) -> dict[tuple[float, str], list[tuple[float, float]]]:
    """Eval (AUC, GAUC) per (sparse_lr, model), one pair per seed; model "popularity" is the baseline."""
    from trainers.metrics import gauc
    from trainers.ranking.train import TrainConfig, train

    out: dict[tuple[float, str], list[tuple[float, float]]] = {(lr, m): [] for lr in args.sparse_lr
                                                               for m in args.models}
    out[0.0, "popularity"] = []
    for seed in args.seeds:
        data = planted_recency(users=args.users, history=args.history, seed=seed)
        base = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed, threads=args.threads,
                           item_table_size=data.items + 1, category_table_size=data.categories + 1,
                           max_len=args.history, progress_every=args.steps, dense_lr=args.dense_lr,
                           item_vectors=args.search == "cosine", search=args.search,
                           search_k=args.search_k if args.search != "none" else 0)
        users, labels = data.eval.column("user_id").to_numpy(), data.eval.column("label").to_numpy()
        for lr, model in [key for key in out if key[1] != "popularity"]:
            start = time.perf_counter()
            result = train(data.train, data.eval, data.log, replace(base, model=model, sparse_lr=lr),
                           vectors=data.vectors if args.search == "cosine" else None)
            m = result.eval_metrics
            out[lr, model].append((m["auc"], m["gauc"]))
            print(f"seed {seed}  sparse_lr {lr:<5}  {model:>4}  AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  "
                  f"(logloss {m['logloss']:.4f}, {time.perf_counter() - start:.1f} s)", flush=True)
        out[0.0, "popularity"].append((m["baseline_auc"], m["baseline_gauc"]))
    return out


def main(argv: list[str] | None = None) -> None:
    from trainers.ranking.train import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["mean", "din", "dien", "tin", "sdim"])
    parser.add_argument("--search", default="none")
    parser.add_argument("--search-k", type=int, default=8)
    parser.add_argument("--sparse-lr", type=float, nargs="+", default=[TrainConfig.sparse_lr, 0.1],
                        help="every model is trained at each of these table learning rates (RowWiseAdagrad)")
    parser.add_argument("--dense-lr", type=float, default=TrainConfig.dense_lr)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from pipelines.progress import quiet_libraries

    quiet_libraries()
    start = time.perf_counter()
    results = run(args)
    print(f"\nplanted recency: {args.users} users x 4 targets, history {args.history}, {args.steps} steps of "
          f"{args.batch_size}, search {args.search}; eval slice, mean +- std over seeds {args.seeds}:\n")
    print("| sparse_lr | model | AUC | GAUC |\n|---|---|---|---|")
    for (lr, model), values in results.items():
        a, g = np.array(values).T
        print(f"| {lr if lr else '-'} | {model} | {a.mean():.3f} ± {a.std():.3f} | {g.mean():.3f} ± {g.std():.3f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
