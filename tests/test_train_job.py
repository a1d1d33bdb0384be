import json

import pytest

from pipelines.cli import main
from pipelines.train_job import run_train
from tests.helpers import backfilled_run

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("train_job")
    backfilled_run(work, users=60, days=6)
    return work


def test_cli_trains_tin_from_a_backfilled_run(run, capsys):
    assert main(["train", "--workdir", str(run), "--model", "tin", "--search", "category", "--search-k", "10",
                 "--steps", "60"]) == 0
    saved = json.loads((run / "models" / "tin" / "metrics.json").read_text())
    assert saved["search"] == "category"
    assert saved["last_loss"] < saved["first_loss"]
    assert all(n > 0 for n in saved["rows"])
    assert 0.0 <= saved["test"]["auc"] <= 1.0
    assert (run / "models" / "tin" / "weights.pt").stat().st_size > 0


def test_retriever_reports_recall_on_the_test_slice(run):
    out = run_train(run, "comirec-sa", steps=60)
    assert out["last_loss"] < out["first_loss"]
    assert 0.0 <= out["test"]["recall@50"] <= out["test"]["hr@50"] <= 1.0


def test_missing_run_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="recstream backfill"):
        run_train(tmp_path, "din")
    with pytest.raises(ValueError, match="model must be one of"):
        run_train(tmp_path, "dlrm")
