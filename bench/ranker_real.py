"""Rankers on real data: test AUC and GAUC of the point-in-time popularity baselines, mean, DIN,
DIEN, TIN, TIN with the lifelong search units (category = SIM hard, dare = DARE) and SDIM, mean +-
std over seeds, on ml-latest-small and the Taobao UserBehavior slice in ../shared/data (skipped
where absent) and on a synthetic stream with drifting interests.

    .venv/bin/python bench/ranker_real.py [--seeds 0 1 2] [--only ml-latest-small|taobao|synthetic]
        [--models ...] [--steps-ml 600] [--steps-taobao 300] [--steps-synthetic 300]
        [--sparse-lr 0.01 0.1] [--sampling uniform|popularity] [--json out.json]

Framing (docs/training.md): records go through features.validate.parse_event; every behavior
(a MovieLens rating; a Taobao pv / cart / fav / buy; a synthetic click) after a user's first is a
positive at its timestamp, with one negative drawn (seeded) point in time (features/negatives.py):
among the items that exist by then (taken by someone strictly before), uniformly or by popularity,
that the user had not taken by then (bench/retriever_report.load_tables). Examples are split by
row quantiles of time with features.splits.time_splits (the `recstream train` split): the latest
10% of the rows are the test slice, the 10% before them validation, the rest training. Each
example's history is the user's behaviors strictly before its time (point in time). Table sizes
come from the data (trainers/sizing.py, 8 rows per distinct ID); the share of IDs on a shared row
is printed.

Models: mean / din / dien / tin read the last ``--max-len`` (50) behaviors; tin+category, tin+dare
and sdim read the last ``--search-len`` (500), the search units keep the top ``--search-k`` (50).
Model selection is on validation only: for each model the table learning rate (RowWiseAdagrad,
one of ``--sparse-lr``) with the best validation GAUC at seed 0 is kept, and every seed is then
trained at that rate; the test slice is scored once per run. The baselines need no training
(trainers/baselines.py): ``popularity`` is the item's behaviors before the example's time,
``popularity (7 d)`` the same over the week before it.
tin+cosine is not run: it needs frozen multimodal item vectors (pipelines/embed/job.py), which are
not cheap on 2 CPU cores for these catalogs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.retriever_report import Tables, load_tables, taobao_tables  # noqa: E402
from features.splits import time_splits  # noqa: E402

DATA = REPO.parent / "shared" / "data"
# name: (search unit, search_k from args or 0)
MODELS = {"mean": ("mean", "none"), "din": ("din", "none"), "dien": ("dien", "none"), "tin": ("tin", "none"),
          "tin+category": ("tin", "category"), "tin+dare": ("tin", "dare"), "sdim": ("sdim", "none")}
LONG = ("sdim",)  # poolings that read the long history themselves (no search unit)


def movielens(folder: Path, sampling: str) -> Tables:
    from pipelines.sources.datasets import movielens_catalog, movielens_events

    return load_tables(movielens_events(folder), movielens_catalog(folder), negatives=1, sampling=sampling)


def taobao(folder: Path, sampling: str) -> Tables:
    return taobao_tables(folder, negatives=1, sampling=sampling)


def synthetic(sampling: str) -> Tables:
    """The planted stream with interests that drift (5% of a user's interests move per day)."""
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

    stream = SyntheticStream(SyntheticConfig(users=400, days=20, sessions_per_user=12, drift_per_day=0.05, seed=0))
    lines = (line for window, _ in stream.windows() for line in window)
    return load_tables(lines, stream.catalog(), negatives=1, sampling=sampling)


def run_dataset(name: str, t: Tables, args: argparse.Namespace, steps: int) -> dict:
    from trainers.baselines import ItemCounts, popularity
    from trainers.metrics import ranking_metrics
    from trainers.ranking.train import TrainConfig, predict, train
    from trainers.sizing import collisions, rows_for

    split = time_splits(t.examples, 0.1, 0.1)
    cols = {s: (getattr(split, s).column("user_id").to_numpy(), getattr(split, s).column("label").to_numpy())
            for s in ("valid", "test")}
    out = {"dataset": name, "rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
           "users": [len(np.unique(getattr(split, s).column("user_id").to_numpy())) for s in ("train", "valid", "test")],
           "behaviors": t.log.num_rows, "steps": steps, "methods": {}}
    sizes = {}
    for key in ("item_id", "category_id"):
        ids = np.concatenate([t.log.column(key).to_numpy(), t.examples.column(key).to_numpy()])
        sizes[key] = collisions(ids, rows_for(len(np.unique(ids))))
    out["tables"] = sizes
    print(f"{name}: {t.log.num_rows} behaviors; examples train/valid/test {out['rows']}, users {out['users']}; "
          f"item table {sizes['item_id']['rows']} rows, {sizes['item_id']['shared_fraction']:.1%} of "
          f"{sizes['item_id']['distinct']} items share a row", file=sys.stderr, flush=True)
    counts = ItemCounts(t.log)
    for method, window in (("popularity", None), ("popularity (7 d)", 7 * 86_400_000)):
        runs = [{s: ranking_metrics(*cols[s], popularity(counts, getattr(split, s), window)) for s in cols}]
        out["methods"][method] = {"sparse_lr": None, "runs": runs * len(args.seeds)}
    base = TrainConfig(steps=steps, batch_size=256, threads=1, item_table_size=sizes["item_id"]["rows"],
                       category_table_size=sizes["category_id"]["rows"], progress_every=steps)
    for method, (pooling, search) in MODELS.items():
        if args.models and method not in args.models:
            continue
        long = search != "none" or pooling in LONG
        cfg0 = replace(base, model=pooling, search=search, max_len=args.search_len if long else args.max_len,
                       search_k=0 if search == "none" else args.search_k)

        def one(seed: int, lr: float) -> dict:
            cfg = replace(cfg0, seed=seed, sparse_lr=lr)
            start = time.perf_counter()
            res = train(split.train, split.valid, t.log, cfg)
            test_scores = predict(res.state_dict, cfg, split.test, t.log)
            run = {"seed": seed, "sparse_lr": lr, "valid": ranking_metrics(*cols["valid"], res.eval_scores),
                   "test": ranking_metrics(*cols["test"], test_scores), "samples_per_s": res.samples_per_s,
                   "seconds": time.perf_counter() - start}
            print(f"  {name} {method:<13} seed {seed} lr {lr:<5} valid GAUC {run['valid']['gauc']:.4f}  "
                  f"test AUC {run['test']['auc']:.4f} GAUC {run['test']['gauc']:.4f}  ({run['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
            return run

        first = {lr: one(args.seeds[0], lr) for lr in args.sparse_lr}
        lr = max(first, key=lambda x: first[x]["valid"]["gauc"])  # validation only
        runs = [first[lr]] + [one(seed, lr) for seed in args.seeds[1:]]
        out["methods"][method] = {"sparse_lr": lr, "runs": runs,
                                  "seed0_valid_gauc": {str(k): v["valid"]["gauc"] for k, v in first.items()}}
    return out


def table(results: list[dict]) -> str:
    lines = ["| dataset | method | sparse_lr (by valid GAUC) | valid GAUC | test AUC | test GAUC |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for method, m in r["methods"].items():
            def cell(split, key):
                v = np.array([run[split][key] for run in m["runs"]])
                return f"{v.mean():.3f}" if method.startswith("popularity") else f"{v.mean():.3f} ± {v.std():.3f}"
            lines.append(f"| {r['dataset']} | {method} | {m['sparse_lr'] or '-'} | {cell('valid', 'gauc')} | "
                         f"{cell('test', 'auc')} | {cell('test', 'gauc')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("ml-latest-small", "taobao", "synthetic"))
    p.add_argument("--models", nargs="+", choices=list(MODELS), help="a subset of the trained models")
    p.add_argument("--steps-ml", type=int, default=600)
    p.add_argument("--steps-taobao", type=int, default=300)
    p.add_argument("--steps-synthetic", type=int, default=300)
    p.add_argument("--sampling", choices=("uniform", "popularity"), default="uniform", help="negatives")
    p.add_argument("--sparse-lr", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--search-len", type=int, default=500)
    p.add_argument("--search-k", type=int, default=50)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    from pipelines.progress import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()
    results = []
    ml, tb = Path(args.data) / "ml-latest-small", Path(args.data) / "taobao-userbehavior-slice"
    if args.only in (None, "ml-latest-small"):
        if ml.is_dir():
            results.append(run_dataset("ml-latest-small", movielens(ml, args.sampling), args, args.steps_ml))
        else:
            print(f"skipping ml-latest-small: {ml} is absent", file=sys.stderr)
    if args.only in (None, "taobao"):
        if tb.is_dir():
            results.append(run_dataset("taobao slice", taobao(tb, args.sampling), args, args.steps_taobao))
        else:
            print(f"skipping the Taobao slice: {tb} is absent", file=sys.stderr)
    if args.only in (None, "synthetic"):
        results.append(run_dataset("synthetic drifting", synthetic(args.sampling), args, args.steps_synthetic))
    print(table(results))
    for r in results:
        print(f"{r['dataset']}: examples train/valid/test {r['rows']}, users {r['users']}, {r['steps']} steps of 256")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
