"""`recstream train`: one ranker or retriever on a backfilled run folder."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.train import RANKERS, RETRIEVERS

# Flags that set a model config field of the same name (None: the config's default or the TOML's).
FIELDS = {"batch_size": int, "embedding_dim": int, "max_len": int, "item_table_size": int,
          "category_table_size": int}


def add(sub) -> None:
    t = sub.add_parser("train", help="train a ranker or retriever on a backfilled run (time-split train/valid/test)")
    t.add_argument("--workdir", required=True, help="run folder holding offline/examples and offline/behavior_log")
    t.add_argument("--model", required=True, choices=[*RANKERS, *RETRIEVERS])
    t.add_argument("--config", help="TOML file of the model's settings (TrainConfig or RetrievalConfig fields); "
                                    "flags override it")
    t.add_argument("--search", choices=["none", "category", "cosine", "dare"],
                   help="rankers: lifelong search unit (default none)")
    t.add_argument("--search-k", type=int, help="behaviors the search unit keeps")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--sparse-lr", type=float, help="rankers: the tables' RowWiseAdagrad learning rate")
    for name, kind in FIELDS.items():
        t.add_argument(f"--{name.replace('_', '-')}", type=kind,
                       help="default: from the data (distinct IDs x --table-headroom)" if name.endswith("table_size")
                       else None)
    t.add_argument("--table-headroom", type=float, help="table rows per distinct ID seen (default: trainers.sizing.HEADROOM, 8)")
    t.add_argument("--valid-fraction", type=float, default=0.1, help="validation: the rows before the test slice")
    t.add_argument("--test-fraction", type=float, default=0.1, help="test: the latest rows by time")
    t.add_argument("--refit", action="store_true",
                   help="after validation, train again on train + valid and score the test slice with that model")
    t.add_argument("--seed", type=int, help="default 0")
    t.set_defaults(func=run)


def run(args, extra) -> int:
    from pipelines.config import read_toml
    from pipelines.train.job import run_train

    settings = read_toml(Path(args.config)) if args.config else {}
    settings.update({name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None})
    result = run_train(Path(args.workdir), args.model, steps=args.steps, seed=args.seed, search=args.search,
                       search_k=args.search_k, sparse_lr=args.sparse_lr, settings=settings,
                       headroom=args.table_headroom, valid_fraction=args.valid_fraction,
                       test_fraction=args.test_fraction, refit=args.refit,
                       progress=lambda step, loss: print(f"step {step:>5}  loss {loss:.4f}", flush=True))
    print(json.dumps({k: v for k, v in result.items() if k != "state_dict"}, indent=2, default=str))
    for name, t in result["tables"].items():
        print(f"{name} table: {t['rows']:,} rows for {t['distinct']:,} IDs; {t['shared_ids']:,} IDs "
              f"({t['shared_fraction']:.1%}) share a row")
    print(f"split: valid from {result['split']['valid_from']}, test from {result['split']['test_from']}"
          + (" (test scored by the model refit on train + valid)" if args.refit else ""))
    for split in ("valid", "test"):
        m = result.get(split, {})
        if "gauc" in m:
            print(f"{split:>5}: AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}   (popularity "
                  f"AUC {m['popularity']['auc']:.4f}  GAUC {m['popularity']['gauc']:.4f}; last week's popularity "
                  f"AUC {m['popularity_recent']['auc']:.4f}  GAUC {m['popularity_recent']['gauc']:.4f})")
    m = result.get("test", {})
    if "recall@50" in m:
        print(f" test: Recall@50 {m['recall@50']:.4f}  HR@50 {m['hr@50']:.4f}   (popularity Recall@50 "
              f"{m['popularity']['recall@50']:.4f}; recent popularity {m['popularity_recent']['recall@50']:.4f})")
    return 0
