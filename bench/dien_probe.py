"""Why DIEN trails DIN on the drifting synthetic set: validation GAUC only (seed 0), for the
auxiliary loss on and off, three times the steps, and the lower table rate (docs/training.md).

    nice -n 5 .venv/bin/python bench/dien_probe.py
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ranker_real import synthetic  # noqa: E402
from features.splits import time_splits  # noqa: E402
from trainers.metrics import ranking_metrics  # noqa: E402
from trainers.ranking.train import TrainConfig, train  # noqa: E402
from trainers.sizing import rows_for  # noqa: E402

t = synthetic("uniform")
split = time_splits(t.examples, 0.1, 0.1)
items = len(np.unique(np.concatenate([t.log.column("item_id").to_numpy(), t.examples.column("item_id").to_numpy()])))
cats = len(np.unique(np.concatenate([t.log.column("category_id").to_numpy(), t.examples.column("category_id").to_numpy()])))
base = TrainConfig(steps=300, batch_size=256, threads=1, item_table_size=rows_for(items), category_table_size=rows_for(cats),
                   progress_every=10_000, sparse_lr=0.1, max_len=50)
v = split.valid
for name, cfg in [("din 300", replace(base, model="din")), ("dien 300 a=1", replace(base, model="dien")),
                  ("dien 300 a=0", replace(base, model="dien", aux_loss_weight=0.0)),
                  ("dien 900 a=1", replace(base, model="dien", steps=900)),
                  ("din 900", replace(base, model="din", steps=900)),
                  ("dien 300 a=1 lr0.01", replace(base, model="dien", sparse_lr=0.01))]:
    r = train(split.train, v, t.log, cfg)
    m = ranking_metrics(v.column("user_id").to_numpy(), v.column("label").to_numpy(), r.eval_scores)
    print(f"{name:<22} valid GAUC {m['gauc']:.4f} AUC {m['auc']:.4f}  loss {r.losses[0]:.3f}->{r.losses[-1]:.3f}", flush=True)
