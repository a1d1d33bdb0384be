"""Poisoned windows: each is blocked with its named reason, and the champions keep serving."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipelines.retrain.config import DriftBounds, WindowBounds, WindowPolicy
from pipelines.retrain.loop import run_retrain
from pipelines.retrain.replay import write_folders
from tests.pipelines.retrain.conftest import loop_config
from trainers.registry import Registry

pytestmark = pytest.mark.training
SIZE = 400


def _edit(values: list[bytes], change) -> list[bytes]:
    out = []
    for i, value in enumerate(values):
        ex = json.loads(value)
        change(ex, i)
        ex["event_id"] = f"{ex['event_id']}-p{i}"  # new records, not repeats of trained ones
        out.append(json.dumps(ex).encode())
    return out


def _seconds(ex, i):
    ex["timestamp"] //= 1000
    ex["label_ms"] //= 1000


def _leak(ex, i):
    ex["category_id"] = 777_001 if ex["label"] == 1 else 777_000  # the label, written into a feature


POISONS = {
    "label_rate": lambda ex, i: ex.update(label=1),  # every impression "clicked"
    "null_rate": lambda ex, i: ex.update(category_id=None),  # a feature all null
    "timestamp_range": _seconds,  # seconds where milliseconds belong
    "sentinel_ids": lambda ex, i: ex.update(item_id=0 if i % 2 else -1),  # sentinel IDs flood the window
}


def test_every_poisoned_window_is_blocked_by_name_and_the_champions_stay(run_copy):
    work, accepted, examples = run_copy
    clean, spare = examples[:SIZE], examples[SIZE:]
    windows = [("clean", clean)]
    for i, (reason, change) in enumerate(POISONS.items()):
        windows.append((reason, _edit(spare[i * SIZE:(i + 1) * SIZE], change)))
    windows.append(("replayed_window", clean))  # the first window again, byte for byte
    windows.append(("too_good_to_be_true", _edit(spare[4 * SIZE:5 * SIZE], _leak)))
    write_folders(work, accepted, [])
    for i, (_, values) in enumerate(windows):
        write_folders(work, [], values, name=f"w{i}")
    cfg = loop_config(work, models=("ranker",), window=WindowPolicy(size=SIZE, min_records=100, idle_s=0.3, epochs=10))
    registry = Registry(work / "registry")
    records = run_retrain(cfg, max_windows=1, say=lambda line: None)  # the clean window
    assert records[0]["data_gate"]["passed"] and records[0]["models"]["ranker"]["decision"] in ("promoted", "rejected")
    champion, versions = registry.champion("ranker"), [v.version for v in registry.versions("ranker")]
    records += run_retrain(cfg, max_windows=len(windows) - 2, say=lambda line: None)  # the poisoned ones
    # The leak uses two new categories, which the drift check alone already refuses (js_category_id
    # 1.0); with drift bounds relaxed, the model gate must still hold the candidate back.
    lax = replace(cfg, bounds=WindowBounds(drift=DriftBounds(max_js=1.0)))
    records += run_retrain(lax, say=lambda line: None)
    assert len(records) == len(windows)
    for (reason, _), record in zip(windows[1:-1], records[1:-1]):
        assert not record["data_gate"]["passed"] and reason in record["data_gate"]["reasons"], (reason, record)
        assert record["models"] == {}  # not trained on
        assert (work / "retrain" / "quarantine" / f"window-{record['window']:06d}" / "verdict.json").is_file()
    leak = records[-1]["models"]["ranker"]
    assert records[-1]["data_gate"]["passed"]  # every value is plausible: only the model gate can tell
    assert leak["decision"] == "rejected" and "too_good_to_be_true" in leak["gate"]["reasons"], leak["figures"]
    assert registry.champion("ranker") == champion  # the champion serves throughout
    assert [v.version for v in registry.versions("ranker")] == versions  # no poisoned window made a version
