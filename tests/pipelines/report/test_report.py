"""`recstream report` writes one self-contained page whose plots a real headless Chromium (Debian's
package) decodes and draws."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig
from tests.helpers import backfilled_run

pytestmark = pytest.mark.engine
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def window(n, auc, passed=True, ranker="rejected", retriever="promoted"):
    """A record as the retrain loop writes it to retrain/windows.jsonl (the fields the report reads)."""
    return {"window": n, "records": 2000, "data_gate": {"passed": passed},
            "models": {} if not passed else {
                "ranker": {"online": {"auc": auc, "gauc": auc - 0.01}, "decision": ranker},
                "retriever": {"online": {"recall@50": auc / 3}, "decision": retriever}}}


def chromium(*args):
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: scripts/setup.sh installs it (apt-get install chromium)"
    return subprocess.run([binary, *CHROMIUM, *args], capture_output=True, text=True, timeout=120)


def test_the_report_page_renders_its_plots_in_a_browser(tmp_path, capsys):
    backfilled_run(tmp_path, users=30, days=4, stats_as_of_ms=SyntheticConfig().start_ms + 4 * DAY_MS)
    losses = list(0.7 * np.exp(-np.arange(200) / 80) + 0.3)
    (tmp_path / "summary.json").write_text(json.dumps({"losses": losses, "metrics": {
        "auc": 0.71, "gauc": 0.70, "logloss": 0.48, "baseline_auc": 0.52, "baseline_gauc": 0.52,
        "baseline_logloss": 0.55}}))
    (tmp_path / "retrain").mkdir()
    records = [window(1, 0.60), window(2, 0.62, ranker="promoted"), window(3, 0.0, passed=False), window(4, 0.64)]
    (tmp_path / "retrain" / "windows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    rng = np.random.default_rng(0)  # the shape bench/stream_bench.py --samples writes
    (tmp_path / "samples.json").write_text(json.dumps({"rate_events_per_s": 700, "samples_ms": {
        "freshness_user_sequence": list(rng.gamma(2, 80, 500)), "freshness_item_stats": list(rng.gamma(3, 300, 400)),
        "example_lag": list(rng.gamma(4, 200, 300))}}))

    assert main(["report", "--workdir", str(tmp_path), "--bench", str(tmp_path / "samples.json")]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'report.html'} (4 plots); open it in a browser"
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "http" not in page  # nothing fetched from elsewhere
    assert re.search(r"<td>3</td><td>2,000</td><td>quarantined</td>", page)

    dom = chromium("--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom",
                   (tmp_path / "report.html").as_uri())
    assert 'data-plots-shown="4"' in dom.stdout, dom.stderr[-2000:]  # every image decoded, with a width
    shot = tmp_path / "shot.png"
    chromium(f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1100,3000", f"--screenshot={shot}",
             (tmp_path / "report.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    coloured = (np.ptp(pixels, axis=2) > 60).mean()  # plot lines and bars, not text or white page
    assert coloured > 0.01, coloured
