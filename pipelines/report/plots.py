"""The report's figures, each a PNG (bytes) drawn with matplotlib's Agg backend, or None where the
run has no data for it."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

DECISIONS = {"promoted": ("tab:green", "promoted"), "rejected": ("tab:red", "rejected")}


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def training_loss(losses: list[float]) -> bytes | None:
    """The ranker's training loss per step, with a moving average."""
    if not losses:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="loss")
    width = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
    ax.plot(steps[width - 1:], smooth, color="tab:blue", lw=2, label=f"mean of {width} steps")
    ax.set(xlabel="step", ylabel="binary cross-entropy", title="Ranker training loss")
    ax.legend()
    return _png(fig)


def windows(records: list[dict]) -> bytes | None:
    """Per window of the retrain loop: the champions' online metrics (evaluate-then-train), each
    candidate's decision, and the windows the data gate quarantined."""
    if not records:
        return None
    fig, (rank, retr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, kind, names in ((rank, "ranker", ("auc", "gauc")), (retr, "retriever", None)):
        rows = [(r["window"], r["models"][kind]) for r in records if kind in r.get("models", {})]
        keys = names or sorted({k for _, m in rows for k in m.get("online", {}) if k.startswith("recall@")})
        for key in keys:
            ax.plot([w for w, _ in rows], [m["online"].get(key, np.nan) for _, m in rows], marker="o", label=f"online {key}")
        for decision, (color, label) in DECISIONS.items():
            hits = [(w, m["online"].get(keys[0], np.nan)) for w, m in rows if m.get("decision") == decision] if keys else []
            if hits:
                ax.scatter(*zip(*hits), s=90, facecolors="none", edgecolors=color, lw=2, label=f"candidate {label}")
        for r in records:
            if not r.get("data_gate", {}).get("passed", True):
                ax.axvspan(r["window"] - 0.4, r["window"] + 0.4, color="0.85", label="quarantined")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per label (quarantine bands repeat theirs)
        if unique:
            ax.legend(list(unique.values()), list(unique), fontsize=8)
        ax.set(ylabel=kind, title=f"{kind}: metrics of the champion on each window before it trains")
    retr.set_xlabel("window")
    retr.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def distributions(seq_lengths: np.ndarray, ctr_7d: np.ndarray, item_behaviors: np.ndarray) -> bytes | None:
    """What the data gates checked: lifelong sequence lengths, users' 7-day CTR, items' behaviors."""
    if len(seq_lengths) == 0:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    axes[0].hist(seq_lengths, bins=30, color="tab:blue")
    axes[0].set(title="lifelong sequence length", xlabel="behaviors", ylabel="users")
    axes[1].hist(ctr_7d, bins=30, color="tab:orange")
    axes[1].set(title="users' 7-day CTR", xlabel="clicks / impressions", ylabel="users")
    axes[2].hist(np.log10(1 + np.asarray(item_behaviors, np.float64)), bins=30, color="tab:green")
    axes[2].set(title="items' lifetime behaviors", xlabel="log10(1 + behaviors)", ylabel="items")
    return _png(fig)


def stream_latency(samples_ms: dict[str, list[float]], rate: float | None) -> bytes | None:
    """bench/stream_bench.py --samples: how long after it was produced an event was readable
    online (per view), and the example stream's lag, as histograms."""
    series = {name: np.asarray(v, np.float64) for name, v in samples_ms.items() if len(v)}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(3.4 * len(series), 3), squeeze=False)
    for ax, (name, ms) in zip(axes[0], series.items()):
        ax.hist(ms, bins=40, color="tab:purple")
        ax.axvline(np.percentile(ms, 99), color="black", ls="--", lw=1, label=f"p99 {np.percentile(ms, 99):,.0f} ms")
        ax.set(title=name.replace("_", " "), xlabel="ms", ylabel="events")
        ax.legend(fontsize=8)
    if rate:
        fig.suptitle(f"stream at {rate:,.0f} events/s")
    return _png(fig)
