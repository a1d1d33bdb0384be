"""Rankers on real data: test AUC and GAUC of popularity, mean, DIN, TIN and TIN with the lifelong
search units (category = SIM hard, dare = DARE), mean +- std over seeds, on ml-latest-small and
the Taobao UserBehavior slice in ../shared/data (skipped where absent).

    .venv/bin/python bench/ranker_real.py [--seeds 0 1 2] [--only ml-latest-small|taobao]
        [--steps-ml 600] [--steps-taobao 300] [--sparse-lr 0.01 0.1] [--json out.json]

Framing (docs/training.md): records go through features.validate.parse_event; every behavior
(a MovieLens rating; a Taobao pv / cart / fav / buy) after a user's first is a positive at its
timestamp, with one negative drawn (seeded) from the catalog among the items the user had not
interacted with by then (features.labels.next_item, via bench/retriever_report.load_tables).
Examples are split by time with features.splits.time_splits (the `recstream train` split): the
last 10% of the time range is the test slice, the 10% before it validation, the rest training.
Each example's history is the user's behaviors strictly before its time (point in time).

Models: mean / din / tin read the last ``--max-len`` (50) behaviors; tin+category and tin+dare
read the last ``--search-len`` (500) and keep the top ``--search-k`` (50) by their search unit.
Model selection is on validation only: for each model the table learning rate (RowWiseAdagrad,
one of ``--sparse-lr``) with the best validation GAUC at seed 0 is kept, and every seed is then
trained at that rate; the test slice is scored once per run. Popularity baselines need no
training: ``popularity`` is the item's smoothed click rate in the training examples (the
trainer's baseline), ``popularity (count)`` the item's number of positives in them.
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
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.retriever_report import Tables, load_tables, taobao_tables  # noqa: E402
from features.splits import time_splits  # noqa: E402

DATA = REPO.parent / "shared" / "data"
# name: (search unit, search_k from args or 0)
MODELS = {"mean": ("mean", "none"), "din": ("din", "none"), "tin": ("tin", "none"),
          "tin+category": ("tin", "category"), "tin+dare": ("tin", "dare")}


def movielens(folder: Path) -> Tables:
    from pipelines.sources.datasets import movielens_catalog, movielens_events

    return load_tables(movielens_events(folder), movielens_catalog(folder), negatives=1)


def taobao(folder: Path) -> Tables:
    return taobao_tables(folder, negatives=1)


def count_scores(train: pa.Table, table: pa.Table) -> np.ndarray:
    """Each item's number of positive training examples (0 if none)."""
    pos = train.filter(pa.compute.equal(train.column("label"), 1)).column("item_id").to_numpy()
    uniq, counts = np.unique(pos, return_counts=True)
    query = table.column("item_id").to_numpy()
    at = np.minimum(np.searchsorted(uniq, query), max(len(uniq) - 1, 0))
    return np.where((len(uniq) > 0) & (uniq[at] == query), counts[at], 0).astype(np.float64) if len(uniq) \
        else np.zeros(len(query))


def run_dataset(name: str, t: Tables, args: argparse.Namespace, steps: int, item_table: int,
                category_table: int) -> dict:
    from trainers.metrics import popularity_scores, ranking_metrics
    from trainers.ranking.train import TrainConfig, predict, train

    split = time_splits(t.examples, 0.1, 0.1)
    cols = {s: (getattr(split, s).column("user_id").to_numpy(), getattr(split, s).column("label").to_numpy())
            for s in ("valid", "test")}
    out = {"dataset": name, "rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
           "users": [len(np.unique(getattr(split, s).column("user_id").to_numpy())) for s in ("train", "valid", "test")],
           "behaviors": t.log.num_rows, "steps": steps, "methods": {}}
    print(f"{name}: {t.log.num_rows} behaviors; examples train/valid/test {out['rows']}, users {out['users']}",
          file=sys.stderr, flush=True)
    for method, scorer in (("popularity", popularity_scores), ("popularity (count)", count_scores)):
        runs = [{"valid": ranking_metrics(*cols["valid"], scorer(split.train, split.valid)),
                 "test": ranking_metrics(*cols["test"], scorer(split.train, split.test))}]
        out["methods"][method] = {"sparse_lr": None, "runs": runs * len(args.seeds)}
    base = TrainConfig(steps=steps, batch_size=256, threads=1, item_table_size=item_table,
                       category_table_size=category_table, progress_every=steps)
    for method, (pooling, search) in MODELS.items():
        if args.models and method not in args.models:
            continue
        cfg0 = replace(base, model=pooling, search=search, max_len=args.max_len if search == "none" else args.search_len,
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
    p.add_argument("--only", choices=("ml-latest-small", "taobao"))
    p.add_argument("--models", nargs="+", choices=list(MODELS), help="a subset of the trained models")
    p.add_argument("--steps-ml", type=int, default=600)
    p.add_argument("--steps-taobao", type=int, default=300)
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
            results.append(run_dataset("ml-latest-small", movielens(ml), args, args.steps_ml, 50_000, 1_000))
        else:
            print(f"skipping ml-latest-small: {ml} is absent", file=sys.stderr)
    if args.only in (None, "taobao"):
        if tb.is_dir():
            results.append(run_dataset("taobao slice", taobao(tb), args, args.steps_taobao, 20_000, 4_000))
        else:
            print(f"skipping the Taobao slice: {tb} is absent", file=sys.stderr)
    print(table(results))
    for r in results:
        print(f"{r['dataset']}: examples train/valid/test {r['rows']}, users {r['users']}, {r['steps']} steps of 256")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
