"""`recstream train`: one ranker or retriever on a backfilled run folder."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.train import RANKERS, RETRIEVERS


def add(sub) -> None:
    t = sub.add_parser("train", help="train a ranker or retriever on a backfilled run (time-split train/valid/test)")
    t.add_argument("--workdir", required=True, help="run folder holding offline/examples and offline/behavior_log")
    t.add_argument("--model", required=True, choices=[*RANKERS, *RETRIEVERS])
    t.add_argument("--search", default="none", choices=["none", "category", "cosine", "dare"],
                   help="rankers: lifelong search unit")
    t.add_argument("--search-k", type=int, default=0, help="behaviors the search unit keeps")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--sparse-lr", type=float, help="rankers: the tables' RowWiseAdagrad learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run)


def run(args, extra) -> int:
    from pipelines.train.job import run_train

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
