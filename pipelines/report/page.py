"""The report page: what a run folder holds, as tables and plots in one HTML file (PNGs inline as
data: URIs, no scripts or styles from elsewhere), so it can be mailed or archived as it is."""
from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from pipelines.report import plots

STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         "th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}")
# Marks the page once its images have decoded (a browser test reads it from the DOM).
CHECK = ("<script>window.addEventListener('load',()=>{document.body.dataset.plotsShown="
         "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});</script>")


def write_report(workdir: Path, out: Path | None = None, bench: Path | None = None) -> tuple[Path, int]:
    """Write the report of ``workdir`` (default WORKDIR/report.html), with the stream's freshness
    from ``bench`` (bench/stream_bench.py --samples) where given; returns (path, plots drawn)."""
    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / "report.html"
    summary = _json(workdir / "summary.json") or {}
    records = [json.loads(line) for line in _lines(workdir / "retrain" / "windows.jsonl")]
    stream = _json(Path(bench)) if bench is not None else None
    figures = {
        "Training": plots.training_loss(summary.get("losses") or []),
        "Continuous training, window by window": plots.windows(records),
        "Feature distributions (what the data gates checked)": plots.distributions(*_distributions(workdir)),
        "Stream freshness and example lag (bench/stream_bench.py)":
            plots.stream_latency(stream["samples_ms"], stream.get("rate_events_per_s")) if stream else None,
    }
    parts = [f"<h1>recstream run {html.escape(str(workdir))}</h1>",
             f"<p>written {datetime.now(timezone.utc).isoformat(timespec='seconds')}</p>"]
    if summary.get("metrics"):
        m = summary["metrics"]
        parts.append(_table("Ranker on the held-out time split", ["", "AUC", "GAUC", "logloss"], [
            ["model", m["auc"], m.get("gauc"), m["logloss"]],
            ["popularity", m["baseline_auc"], m.get("baseline_gauc"), m["baseline_logloss"]]]))
    if records:
        parts.append(_table("Windows", ["window", "records", "data gate", "ranker", "retriever"], [
            [r["window"], r["records"], "passed" if r["data_gate"]["passed"] else "quarantined",
             r.get("models", {}).get("ranker", {}).get("decision", "-"),
             r.get("models", {}).get("retriever", {}).get("decision", "-")] for r in records]))
    drawn = 0
    for title, png in figures.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if png is None:
            parts.append("<p>(nothing in this run to plot)</p>")
            continue
        drawn += 1
        parts.append(f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>recstream report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}{CHECK}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, drawn


def _distributions(workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def column(table: str, name: str) -> np.ndarray:
        folder = workdir / "offline" / table
        if not folder.is_dir():
            return np.zeros(0)
        return ds.dataset(folder, format="parquet").to_table(columns=[name]).column(name).to_numpy()
    return column("user_sequence", "seq_length"), column("user_stats", "ctr_7d"), column("item_stats", "behaviors_life")


def _table(title: str, head: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape("-" if v is None else f"{v:,}" if isinstance(v, int)
                                                                   else str(v))
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (f"<h2>{html.escape(title)}</h2><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"
            f"{body}</table>")


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
