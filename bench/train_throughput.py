"""Training throughput of the rankers: the TorchRec path against the same model on plain nn.Embedding.

    .venv/bin/python bench/train_throughput.py [--threads 1] [--seconds 4] [--batch-size 256]
        [--lengths 50 1000 10000] [--search-k 50] [--json out.json] [--profile MODEL LENGTH]

For each model and history length L (every row holds exactly L behaviors; 100 categories, so
the category search finds about L/100 same-category behaviors per target):

- ``torchrec``: what trainers.ranking.train.train runs: SequenceRanker with its tables in
  EmbeddingCollections built on "meta", RowWiseAdagrad fused into backward
  (apply_optimizer_in_backward), sharded table-wise by the planner under
  DistributedModelParallel at world size 1 (gloo), Adam on the dense arches;
- ``plain``: the same SequenceRanker (same pooling, search unit and over-arch code) whose
  SparseArch is replaced by plain torch.nn.Embedding(sparse=True) tables, updated by
  torch.optim.Adagrad (sparse gradients; element-wise where RowWiseAdagrad keeps one
  accumulator per row) and the same Adam on the dense arches.

L = 50 runs without a search unit; L = 1,000 and 10,000 run with the category search unit (SIM
hard) keeping the top ``--search-k``, and tin also with DARE's attention-table search. Batches
are built once before timing (both paths train on the same KJTs), so the figure is the training
step alone: forward, backward, optimizer. Each cell runs in its own process (``--one``) so that
its peak RSS (getrusage ru_maxrss) is its own; "model RSS" is the peak minus the RSS after the
imports. ``--profile MODEL LENGTH`` prints the torch.profiler top operators of both paths.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CATEGORIES = 100
ITEMS = 100_000
# (model label, pooling, search) per length class
SHORT = [("mean", "mean", "none"), ("din", "din", "none"), ("tin", "tin", "none"), ("dien", "dien", "none"),
         ("sdim", "sdim", "none")]
LONG = [("mean+category", "mean", "category"), ("din+category", "din", "category"),
        ("tin+category", "tin", "category"), ("tin+dare", "tin", "dare"), ("dien+category", "dien", "category"),
        ("sdim", "sdim", "none")]  # SDIM hashes the whole history: no search unit


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def model_config(pooling: str, search: str, length: int, k: int):
    from trainers.ranking.model import ModelConfig

    return ModelConfig(embedding_dim=16, item_table_size=ITEMS, category_table_size=CATEGORIES + 1, max_len=length,
                       pooling=pooling, search=search, search_k=0 if search == "none" else k, attention_dim=8)


def make_batches(n: int, batch_size: int, length: int, seed: int = 0):
    """n random batches whose rows all hold ``length`` behaviors (KJT in trainers.ranking.batches' layout)."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from trainers.ranking.batches import GAP_TABLE_SIZE, SPARSE_KEYS

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        B, N = batch_size, batch_size * length
        values = torch.cat([
            torch.randint(1, ITEMS, (B,), generator=gen), torch.randint(1, CATEGORIES + 1, (B,), generator=gen),
            torch.ones(B, dtype=torch.long),
            torch.randint(1, ITEMS, (N,), generator=gen), torch.randint(1, CATEGORIES + 1, (N,), generator=gen),
            torch.randint(1, GAP_TABLE_SIZE, (N,), generator=gen)])
        lengths = torch.cat([torch.ones(3 * B, dtype=torch.long), torch.full((3 * B,), length, dtype=torch.long)])
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(SPARSE_KEYS), values=values, lengths=lengths)
        out.append((kjt, (torch.rand(B, generator=gen) < 0.5).float()))
    return out


def make_plain_sparse_arch(cfg):
    """SparseArch's interface (forward / attention_lookup -> {feature: JaggedTensor}) on nn.Embedding."""
    from torch import nn
    from torchrec.sparse.jagged_tensor import JaggedTensor

    from trainers.ranking.batches import GAP_TABLE_SIZE
    from trainers.ranking.pooling import TIME_POOLINGS

    def table(rows: int, dim: int) -> nn.Embedding:
        emb = nn.Embedding(rows, dim, sparse=True)
        nn.init.uniform_(emb.weight, -cfg.init_scale, cfg.init_scale)
        return emb

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            d, a = cfg.embedding_dim, cfg.attention_dim
            self.main = nn.ModuleDict({"item": table(cfg.item_table_size, d),
                                       "category": table(cfg.category_table_size, d)})
            if cfg.pooling in TIME_POOLINGS:
                self.main["gap"] = table(GAP_TABLE_SIZE, 2 * d)
            self.att = None
            if cfg.search == "dare":
                self.att = nn.ModuleDict({"item": table(cfg.item_table_size, a),
                                          "category": table(cfg.category_table_size, a),
                                          "gap": table(GAP_TABLE_SIZE, 2 * a)})

        @staticmethod
        def _lookup(tables, sparse):
            features, out = sparse.to_dict(), {}
            for name, emb in tables.items():
                for key in (f"target_{name}", f"hist_{name}"):
                    jt = features[key]
                    out[key] = JaggedTensor(values=emb(jt.values()), lengths=jt.lengths())
            return out

        def forward(self, sparse):
            return self._lookup(self.main, sparse)

        def attention_lookup(self, sparse):
            return self._lookup(self.att, sparse)

    return Plain()


def measure(path: str, pooling: str, search: str, length: int, k: int, batch_size: int, seconds: float,
            threads: int, profile: bool = False) -> dict:
    """One cell: samples/s of the training step and peak RSS, in this process."""
    import torch
    import torch.nn.functional as F
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    from pipelines.progress import quiet_libraries
    from trainers.distributed import combined_optimizer, process_group, shard
    from trainers.ranking.model import SequenceRanker
    from trainers.ranking.train import ranker_of

    quiet_libraries()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base_rss = current_rss_mb()
    cfg = model_config(pooling, search, length, k)
    batches = make_batches(3, batch_size, length)
    with process_group("gloo") as pg:
        model = SequenceRanker(cfg, sparse_device=torch.device("meta"))
        if path == "torchrec":
            apply_optimizer_in_backward(RowWiseAdagrad, model.sparse_arch.parameters(), {"lr": 0.05})
            model = shard(model, pg, "table_wise", torch.device("cpu"))
            opt = combined_optimizer(model, 3e-3)
            optimizers = [opt]
        else:
            model.sparse_arch = make_plain_sparse_arch(cfg)
            sparse = list(model.sparse_arch.parameters())
            ids = {id(p) for p in sparse}
            dense = [p for p in model.parameters() if id(p) not in ids]
            optimizers = [torch.optim.Adagrad(sparse, lr=0.05), torch.optim.Adam(dense, lr=3e-3)]
        model.train()

        def step(i: int) -> float:
            kjt, labels = batches[i % len(batches)]
            for o in optimizers:
                o.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(kjt), labels)
            loss = loss + ranker_of(model).extra_loss()  # DIEN's auxiliary loss; 0 for the others
            loss.backward()
            for o in optimizers:
                o.step()
            return float(loss)

        for i in range(2):  # warm-up: planner caches, allocator
            step(i)
        if profile:
            from torch.profiler import ProfilerActivity, profile as prof

            with prof(activities=[ProfilerActivity.CPU]) as p:
                for i in range(5):
                    step(i)
            print(f"--- {path} {pooling}/{search} L={length}: top operators by self CPU time")
            print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48))
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3:
            step(n)
            n += 1
        elapsed = time.perf_counter() - start
    return {"path": path, "pooling": pooling, "search": search, "length": length, "steps": n,
            "samples_per_s": n * batch_size / elapsed, "step_ms": 1000 * elapsed / n,
            "peak_rss_mb": rss_mb(), "model_rss_mb": rss_mb() - base_rss}


def run_cell(args, label: str, pooling: str, search: str, length: int, path: str) -> dict:
    cmd = [sys.executable, __file__, "--one", path, pooling, search, str(length), "--threads", str(args.threads),
           "--seconds", str(args.seconds), "--batch-size", str(args.batch_size), "--search-k", str(args.search_k)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{label} L={length} {path} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["model"] = label
    print(f"{label:>13} L={length:<6} {path:>8}: {out['samples_per_s']:8.0f} samples/s  "
          f"({out['step_ms']:.1f} ms/step, peak RSS {out['peak_rss_mb']:.0f} MB)", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 1000, 10000])
    p.add_argument("--search-k", type=int, default=50)
    p.add_argument("--models", nargs="+", help="labels to run (default: all)")
    p.add_argument("--json")
    p.add_argument("--one", nargs=4, metavar=("PATH", "POOLING", "SEARCH", "LENGTH"), help=argparse.SUPPRESS)
    p.add_argument("--profile", nargs=2, metavar=("MODEL", "LENGTH"),
                   help="profile one cell of both paths, e.g. --profile tin 50 (MODEL: a label as in the table)")
    args = p.parse_args(argv)
    if args.one:
        path, pooling, search, length = args.one
        print(json.dumps(measure(path, pooling, search, int(length), args.search_k, args.batch_size, args.seconds,
                                 args.threads)))
        return []
    if args.profile:
        label, length = args.profile[0], int(args.profile[1])
        _, pooling, search = next(c for c in SHORT + LONG if c[0] == label)
        for path in ("torchrec", "plain"):
            measure(path, pooling, search, length, args.search_k, args.batch_size, 1.0, args.threads, profile=True)
        return []
    started = time.perf_counter()
    rows = []
    for length in args.lengths:
        for label, pooling, search in (SHORT if length <= 50 else LONG):
            if args.models and label not in args.models:
                continue
            cells = {path: run_cell(args, label, pooling, search, length, path) for path in ("torchrec", "plain")}
            rows.append({"model": label, "length": length, **{f"{k}_{m}": c[m] for k, c in cells.items()
                                                               for m in ("samples_per_s", "peak_rss_mb", "model_rss_mb")}})
    print(f"\nthreads={args.threads}, batch {args.batch_size}, search_k {args.search_k}; training step only\n")
    print("| model | L | TorchRec samples/s | plain samples/s | TorchRec / plain | peak RSS TorchRec / plain (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['length']:,} | {r['torchrec_samples_per_s']:,.0f} | {r['plain_samples_per_s']:,.0f} | "
              f"{r['torchrec_samples_per_s'] / r['plain_samples_per_s']:.2f} | "
              f"{r['torchrec_peak_rss_mb']:,.0f} / {r['plain_peak_rss_mb']:,.0f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
