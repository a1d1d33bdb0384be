"""`recstream train` end to end on a backfilled synthetic run: rankers report AUC, GAUC and
logloss on validation and test (GAUC checked against a per-user sklearn AUC weighted by
impressions), retrievers Recall/HR on the test slice."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from pipelines.cli import main
from pipelines.train.job import run_train
from tests.helpers import backfilled_run

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("train_job")
    backfilled_run(work, users=60, days=6)
    return work


def sklearn_gauc(users, labels, scores) -> tuple[float, int]:
    """(GAUC, users counted): sklearn's AUC per user weighted by the user's impressions, over
    users whose rows hold both classes."""
    num = den = 0.0
    counted = 0
    for u in np.unique(users):
        y, s = labels[users == u], scores[users == u]
        if 0 < y.sum() < len(y):
            num += len(y) * roc_auc_score(y, s)
            den += len(y)
            counted += 1
    return num / den, counted


def test_cli_trains_tin_from_a_backfilled_run(run, capsys):
    assert main(["train", "--workdir", str(run), "--model", "tin", "--search", "category", "--search-k", "10",
                 "--steps", "60", "--sparse-lr", "0.05"]) == 0
    saved = json.loads((run / "models" / "tin" / "metrics.json").read_text())
    assert saved["search"] == "category" and saved["sparse_lr"] == 0.05
    assert saved["last_loss"] < saved["first_loss"]
    assert all(n > 0 for n in saved["rows"])
    assert (run / "models" / "tin" / "weights.pt").stat().st_size > 0
    predictions = pq.read_table(run / "models" / "tin" / "predictions.parquet")
    printed = capsys.readouterr().out
    for split, rows in zip(("valid", "test"), saved["rows"][1:]):
        got = predictions.filter(predictions.column("split").to_numpy(zero_copy_only=False) == split)
        assert got.num_rows == rows
        users, labels, scores = (got.column(c).to_numpy() for c in ("user_id", "label", "score"))
        m = saved[split]
        gauc, counted = sklearn_gauc(users, labels, scores)
        assert counted >= 5  # one-class users are skipped (tests/trainers/test_metrics.py draws those)
        assert m["gauc"] == pytest.approx(gauc, abs=1e-12)
        assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert m["logloss"] == pytest.approx(log_loss(labels, scores), rel=1e-9)
        assert m["gauc"] != pytest.approx(m["auc"], abs=1e-6)  # per user, not the pooled AUC
        assert {"auc", "gauc", "logloss"} <= set(m["popularity"])
        assert f"{split:>5}: AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}" in printed


def test_retriever_reports_recall_on_the_test_slice(run):
    out = run_train(run, "comirec-sa", steps=60)
    assert out["last_loss"] < out["first_loss"]
    assert 0.0 <= out["test"]["recall@50"] <= out["test"]["hr@50"] <= 1.0
    for name in ("popularity", "popularity_recent"):
        assert 0.0 < out["test"][name]["recall@50"] <= out["test"][name]["hr@50"] <= 1.0


def test_missing_run_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="recstream backfill"):
        run_train(tmp_path, "din")
    with pytest.raises(ValueError, match="model must be one of"):
        run_train(tmp_path, "dlrm")
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):  # not taken as "the default"
        run_train(tmp_path, "din", steps=0)
    with pytest.raises(ValueError, match="sparse_lr must be above 0, got 0"):
        run_train(tmp_path, "din", sparse_lr=0.0)


def test_a_run_that_dies_leaves_the_previous_outputs_whole(run):
    """Outputs are written aside and swapped in at the end (pipelines/staged.py)."""
    folder = run / "models" / "tin"
    if not (folder / "weights.pt").exists():
        run_train(run, "tin", steps=20)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def dies(*_args, **_kwargs):
        raise RuntimeError("killed mid-training")
    with pytest.raises(RuntimeError, match="killed mid-training"):
        run_train(run, "tin", steps=20, progress=dies)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in (run / "models").iterdir() if p.name.startswith("tin")) == ["tin"]


def test_settings_tables_from_the_data_baselines_and_refit(run, tmp_path, capsys):
    """A TOML of settings under flags; table sizes from the distinct IDs seen, their collisions
    reported; both point-in-time baselines; --refit scores the test slice with a model trained on
    train + valid (the validation scores stay those of the train-only model)."""
    import pyarrow.dataset as ds

    from trainers.sizing import collisions, rows_for

    toml = tmp_path / "din.toml"
    toml.write_text("batch_size = 64\nembedding_dim = 12\nmax_len = 20\n")
    argv = ["train", "--workdir", str(run), "--model", "din", "--steps", "30", "--config", str(toml),
            "--embedding-dim", "8", "--valid-fraction", "0.2"]
    assert main(argv) == 0
    plain = json.loads((run / "models" / "din" / "metrics.json").read_text())
    plain_scores = pq.read_table(run / "models" / "din" / "predictions.parquet").to_pylist()
    assert main(argv + ["--refit"]) == 0
    printed = capsys.readouterr().out
    refit = json.loads((run / "models" / "din" / "metrics.json").read_text())
    refit_scores = pq.read_table(run / "models" / "din" / "predictions.parquet").to_pylist()
    cfg = refit["config"]
    assert (cfg["batch_size"], cfg["embedding_dim"], cfg["max_len"]) == (64, 8, 20)  # flag over TOML
    log = ds.dataset(run / "offline" / "behavior_log").to_table()
    examples = ds.dataset(run / "offline" / "examples").to_table()
    items = np.concatenate([log.column("item_id").to_numpy(), examples.column("item_id").to_numpy()])
    assert cfg["item_table_size"] == rows_for(len(np.unique(items)))
    assert refit["tables"]["item"] == collisions(items, cfg["item_table_size"])
    assert f"item table: {cfg['item_table_size']:,} rows for {len(np.unique(items)):,} IDs" in printed
    n = sum(refit["rows"])
    assert refit["rows"][1] == pytest.approx(0.2 * n, abs=0.02 * n)  # row quantiles, ties to the later slice
    for m in (refit["valid"], refit["test"]):
        assert {"popularity", "popularity_recent"} <= set(m) and 0 < m["popularity"]["auc"] < 1
    assert refit["split"]["refit"] and refit["split"]["test_from"].endswith("Z")
    valid = [(r["user_id"], r["item_id"], r["timestamp"], r["score"]) for r in plain_scores if r["split"] == "valid"]
    assert valid == [(r["user_id"], r["item_id"], r["timestamp"], r["score"]) for r in refit_scores
                     if r["split"] == "valid"]
    assert [r["score"] for r in plain_scores if r["split"] == "test"] != \
        [r["score"] for r in refit_scores if r["split"] == "test"]
    assert plain["test"]["auc"] != refit["test"]["auc"]


def test_a_bad_setting_is_one_line_naming_it(run, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("embedding_dims = 8\n")
    assert main(["train", "--workdir", str(run), "--model", "din", "--config", str(toml)]) == 2
    assert "unknown key(s) ['embedding_dims']" in capsys.readouterr().err
    assert main(["train", "--workdir", str(run), "--model", "mind", "--search", "category"]) == 2
    assert "unknown key(s) ['search']" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["dien", "sdim"])
def test_the_seed_models_train_from_the_cli(run, model, capsys):
    assert main(["train", "--workdir", str(run), "--model", model, "--steps", "20", "--max-len", "30"]) == 0
    saved = json.loads((run / "models" / model / "metrics.json").read_text())
    assert saved["config"]["model"] == model and saved["config"]["max_len"] == 30
    assert 0 < saved["test"]["auc"] < 1 and np.isfinite(saved["last_loss"])
    assert f"{'test':>5}: AUC {saved['test']['auc']:.4f}" in capsys.readouterr().out
