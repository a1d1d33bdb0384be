"""`recstream models`: list, show, promote, rollback (a retriever's interests follow), history; the
champion watcher serving reads picks each change up."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.retrain.loop import run_retrain
from pipelines.retrain.publish import read_interests
from pipelines.retrain.replay import write_folders
from pipelines.retrain.serving import ChampionWatcher
from tests.pipelines.retrain.conftest import loop_config
from trainers.registry import Registry

pytestmark = pytest.mark.training


def test_list_show_promote_rollback_and_history(run_copy, capsys):
    work, accepted, examples = run_copy
    write_folders(work, accepted, examples[:1500])
    records = run_retrain(loop_config(work, models=("retriever",)), say=lambda line: None)
    registry = Registry(work / "registry")
    promoted = [r["models"]["retriever"]["version"] for r in records
                if r["models"]["retriever"]["decision"] == "promoted"]
    assert promoted, "the test needs a promotion to roll back"
    current = registry.champion("retriever")
    watcher = ChampionWatcher(registry, "retriever", poll_s=0)
    assert watcher.current()[0] == current
    users = [int(json.loads(v)["user_id"]) for v in examples[:20]]
    before = read_interests(work, users)

    assert main(["models", "list", "--workdir", str(work)]) == 0
    listing = capsys.readouterr().out
    starred = [line.split()[:2] for line in listing.splitlines() if line.rstrip().endswith("*")]
    assert starred == [["ranker", "1"], ["retriever", current]], listing
    assert main(["models", "show", "--workdir", str(work), "retriever"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == current and shown["model_gate"]["passed"] and "end" in shown

    assert main(["models", "rollback", "--workdir", str(work), "retriever", "--why", "recall fell"]) == 0
    assert f"version {promoted[-2] if len(promoted) > 1 else '1'} is the champion" in capsys.readouterr().out
    back = registry.champion("retriever")
    assert back != current and watcher.current()[0] == back  # serving picks the rollback up
    after = read_interests(work, users)
    from pipelines.store.feature_store import open_store, read_rows

    assert {r["model_version"] for r in read_rows(open_store(work), "user_interests", users)} == {back}
    assert any(not np.allclose(before[u], after[u]) for u in users)  # the old version's vectors serve again

    assert main(["models", "promote", "--workdir", str(work), "retriever", current, "--why", "fixed"]) == 0
    assert registry.champion("retriever") == current and watcher.current()[0] == current
    assert capsys.readouterr().out == f"retriever: version {current} is the champion\n"
    assert main(["models", "history", "--workdir", str(work), "retriever", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["version"], e["why"]) for e in history[-2:]] == [
        ("rollback", back, "recall fell"), ("promote", current, "fixed")]

    assert main(["models", "rollback", "--workdir", str(work), "ranker", "--to", "9"]) == 2
    assert "ranker has no version '9'" in capsys.readouterr().err
