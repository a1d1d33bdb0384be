"""Continuous vs frozen: per-window AUC/GAUC of the model the loop keeps fine-tuning (through its
gates) against the same model frozen after the backfill, on the later part of each dataset.

For each dataset and seed: the first part of the time range is backfilled and a TIN ranker is
trained on it (the frozen model, also the loop's first champion); the rest is replayed as the
stream job emits it (pipelines.retrain.replay) and the loop runs over it window by window. Each
window is scored before anything trains on it: by the loop's champion (evaluate-then-train),
by the frozen model and by the point-in-time popularity baseline, on the same rows.

    .venv/bin/python bench/retrain_continuous.py --seeds 0,1,2 --data ../shared/data \
        --plot docs/img/continuous_vs_frozen.png --json runs/bench/continuous.json

Datasets: synthetic (drifting interests, impression/click labels), ml-latest-small and the Taobao
slice (next-item labels: each behavior a positive, one negative drawn point in time).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.labels import LabelPolicy  # noqa: E402
from features.pit import sort_log  # noqa: E402
from pipelines.batch.backfill import BackfillConfig, run_backfill  # noqa: E402
from pipelines.config import to_dict  # noqa: E402
from pipelines.progress import quiet_libraries  # noqa: E402
from pipelines.retrain.config import RetrainConfig, WindowPolicy  # noqa: E402
from pipelines.retrain.evaluate import popularity, ranker_metrics, ranker_scores  # noqa: E402
from pipelines.retrain.loop import run_retrain  # noqa: E402
from pipelines.retrain.replay import stream_outputs, write_folders  # noqa: E402
from pipelines.sources.ingest import ingest  # noqa: E402
from pipelines.sources.synthetic import SyntheticConfig  # noqa: E402
from trainers.ranking.train import TrainConfig, train  # noqa: E402
from trainers.registry import Registry  # noqa: E402

DATASETS = {"synthetic": (None, 2_000), "ml-latest-small": ("ml-latest-small", 2_000),
            "taobao": ("taobao-userbehavior-slice/UserBehavior.csv", 500)}


def one_run(name: str, data: Path | None, seed: int, work: Path, stream_fraction: float, epochs: int) -> dict:
    """Backfill, the frozen ranker, the loop over the rest; per-window metrics of the three."""
    rel, size = DATASETS[name]
    synthetic = SyntheticConfig(users=300, items=1_500, days=20, drift_per_day=0.08, seed=seed)
    got = ingest(name, None if rel is None else data / rel, synthetic, work, stream_fraction)
    labels = LabelPolicy(kind=got.label_kind, negatives=1, seed=seed)
    run_backfill(BackfillConfig(input=str(work / "raw" / "backfill" / "*.jsonl"), output=str(work / "offline"),
                                catalog=str(work / "catalog.parquet"), labels=labels, stats_as_of_ms=got.cutoff_ms,
                                labels_until_ms=got.cutoff_ms))
    examples = ds.dataset(work / "offline" / "examples", format="parquet").to_table()
    log = sort_log(ds.dataset(work / "offline" / "behavior_log", format="parquet").to_table())
    cfg = TrainConfig(model="tin", steps=400, batch_size=128, sparse_lr=0.1, seed=seed)
    scratch = Path(tempfile.mkdtemp(dir=work))
    frozen = train(examples, examples.slice(0, 0), log, cfg, checkpoint_dir=scratch)
    registry = Registry(work / "registry")
    registry.promote("ranker", registry.register("ranker", frozen.state_dict, {"config": to_dict(cfg)},
                                                 files={"checkpoint": frozen.checkpoint}))
    lines = [line for p in sorted((work / "raw" / "stream").glob("*.jsonl")) for line in p.read_bytes().splitlines()]
    lines.sort(key=_event_ms)  # a stream delivers events in time order (the files group some datasets by user)
    accepted, stream_examples = stream_outputs(lines, labels, examples=got.label_kind == "impression_click")
    write_folders(work, accepted, stream_examples)

    def observe(window, rows, behaviors, view) -> dict:
        return {"frozen": ranker_metrics(rows, ranker_scores(frozen.state_dict, cfg, rows, view)),
                "popularity": ranker_metrics(rows, popularity(view, rows))}

    loop = RetrainConfig(workdir=work, models=("ranker",), labels=labels,
                         examples="topic" if got.label_kind == "impression_click" else "next_item",
                         window=WindowPolicy(size=size, min_records=size // 5, idle_s=0.5, epochs=epochs), seed=seed)
    start = time.perf_counter()
    records = run_retrain(loop, say=lambda line: None, observe=observe)
    seconds = time.perf_counter() - start
    windows = [{"window": r["window"], "continuous": r["models"]["ranker"]["online"],
                "decision": r["models"]["ranker"]["decision"], **r["observed"]}
               for r in records if r.get("observed")]
    for r in records:
        if not r["data_gate"]["passed"]:
            print(f"  window {r['window']} quarantined: {r['data_gate']['failures']}", flush=True)
    return {"dataset": name, "seed": seed, "windows": windows, "loop_seconds": seconds,
            "examples": sum(w["continuous"]["rows"] for w in windows), "quarantined": sum(
                not r["data_gate"]["passed"] for r in records)}


def _event_ms(line: bytes) -> int:
    from features.validate import timestamp_ms

    try:
        return timestamp_ms(json.loads(line).get("timestamp")) or 0
    except (ValueError, AttributeError):
        return 0


def summarize(runs: list[dict]) -> str:
    lines = ["| dataset | windows | continuous AUC | frozen AUC | popularity AUC | continuous GAUC | frozen GAUC | "
             "popularity GAUC | promoted |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == name]
        cells = []
        for metric in ("auc", "gauc"):
            for who in ("continuous", "frozen", "popularity"):
                per_seed = [np.nanmean([w[who][metric] for w in r["windows"]]) for r in mine]
                cells.append(f"{np.mean(per_seed):.4f} ± {np.std(per_seed):.4f}")
        promoted = np.mean([np.mean([w["decision"] == "promoted" for w in r["windows"]]) for r in mine])
        n = int(np.mean([len(r["windows"]) for r in mine]))
        lines.append(f"| {name} | {n} | {' | '.join(cells[:3])} | {' | '.join(cells[3:])} | {promoted:.0%} |")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in runs if r["dataset"] == name]
        n = min(len(r["windows"]) for r in mine)
        for who, style in (("continuous", "-o"), ("frozen", "--s"), ("popularity", ":^")):
            values = np.array([[w[who]["auc"] for w in r["windows"][:n]] for r in mine])
            mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            x = np.arange(1, n + 1)
            ax.plot(x, mean, style, label=who, markersize=3)
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
        ax.set_title(f"{name} ({len(mine)} seeds)")
        ax.set_xlabel("window (time order)")
        ax.set_ylabel("AUC on the window, before training on it")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the real datasets' folder")
    p.add_argument("--stream-fraction", type=float, default=0.5, help="the later share of time the loop replays")
    p.add_argument("--epochs", type=int, default=2, help="passes over each window's training share")
    p.add_argument("--plot", help="write the per-window AUC plot (PNG) here")
    p.add_argument("--json", help="write every window's figures here")
    args = p.parse_args(argv)
    quiet_libraries()
    runs = []
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            work = Path(tempfile.mkdtemp(prefix=f"continuous-{name}-{seed}-"))
            try:
                got = one_run(name, Path(args.data), seed, work / "run", args.stream_fraction, args.epochs)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            runs.append(got)
            mean = {who: np.nanmean([w[who]["auc"] for w in got["windows"]]) for who in ("continuous", "frozen")}
            print(f"{name} seed {seed}: {len(got['windows'])} windows, {got['examples']:,} examples in "
                  f"{got['loop_seconds']:.1f} s ({got['examples'] / got['loop_seconds']:,.0f} examples/s); "
                  f"mean AUC continuous {mean['continuous']:.4f}, frozen {mean['frozen']:.4f}", flush=True)
    print(summarize(runs))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(runs, indent=1, default=float))
    if args.plot:
        plot(runs, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
