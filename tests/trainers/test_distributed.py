"""Sharded training at world size 2 (gloo, CPU): each sharding type, ranks agree, world size 1 equivalence,
non-finite input refused on every rank, and the torchrun launcher.

The 2-rank runs happen once, in one pair of spawned processes (the module fixture), since
importing TorchRec dominates a process's cost."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist

from trainers.distributed import SHARDING_TYPES
from trainers.item_vectors import ItemVectors
from trainers.launch import config_from, parser, spawn_local
from trainers.ranking.model import SequenceRanker
from trainers.ranking.train import TrainConfig, predict, train

ROOT = Path(__file__).resolve().parents[2]
ITEM = "sparse_arch.ec.embeddings.item.weight"


def tiny_tables(users: int = 24, seed: int = 0) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(train examples, eval examples, behavior log). Each user has a favourite of 6 categories:
    10 behaviors at t=0..9 (80% in it), then examples at t=10..29 (train) and 30..34 (eval) whose
    label is "target in the favourite category", 10% flipped. Items are drawn from ~6,000 IDs,
    so one batch touches a small, batch-specific set of item rows."""
    rng = np.random.default_rng(seed)
    fav = rng.integers(1, 7, users)
    u = np.repeat(np.arange(1, users + 1), 10)
    cats = np.where(rng.random(len(u)) < 0.8, fav[u - 1], rng.integers(1, 7, len(u)))
    log = pa.table({"user_id": u, "timestamp": np.tile(np.arange(10), users),
                    "event_id": [f"e{i}" for i in range(len(u))], "item_id": cats * 1000 + rng.integers(0, 1000, len(u)),
                    "category_id": cats, "event_type_code": np.full(len(u), 2, np.int8)})

    def examples(t0: int, per_user: int) -> pa.Table:
        eu = np.repeat(np.arange(1, users + 1), per_user)
        ec = rng.integers(1, 7, len(eu))
        label = (ec == fav[eu - 1]) ^ (rng.random(len(eu)) < 0.1)
        return pa.table({"user_id": eu, "item_id": ec * 1000 + rng.integers(0, 1000, len(eu)), "category_id": ec,
                         "timestamp": t0 + np.tile(np.arange(per_user), users),
                         "label": pa.array(label.astype(np.int8), pa.int8())})
    return examples(10, 20), examples(30, 5), log


def tiny_config(sharding: str = "table_wise", steps: int = 3, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=32, embedding_dim=8, item_table_size=8192, category_table_size=8, max_len=8,
                sparse_lr=0.05, dense_lr=1e-2, threads=1, sharding=sharding)
    return TrainConfig(**{**base, **kw})


def initial_state(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The same unsharded weights in every process (a seeded plain model)."""
    torch.manual_seed(123)
    return {k: v.clone() for k, v in SequenceRanker(cfg.model_config()).state_dict().items()}


def first_bad_row_of_rank1(n: int, cfg: TrainConfig) -> int:
    """An example row that lands in rank 1's half of global batch 1 (rank_batches' order)."""
    epoch_seed = int(np.random.default_rng(cfg.seed).integers(2**31))
    return int(np.random.default_rng(epoch_seed).permutation(n)[cfg.batch_size - 1])


def _rank_work() -> dict:
    """Runs on each of the 2 ranks."""
    train_ex, eval_ex, log = tiny_tables()
    out = {}
    for sharding in SHARDING_TYPES:
        out[sharding] = train(train_ex, eval_ex, log, tiny_config(sharding, steps=40))
        cfg = tiny_config(sharding, steps=2)
        out["same_start", sharding] = train(train_ex, eval_ex, log, cfg, init_state=initial_state(cfg))
    # A NaN label in rank 1's share only: both ranks must stop (rank 0 must not hang in a collective).
    labels = train_ex.column("label").to_numpy().astype(np.float32)
    labels[first_bad_row_of_rank1(train_ex.num_rows, tiny_config())] = np.nan
    bad = train_ex.set_column(train_ex.schema.get_field_index("label"), "label", pa.array(labels))
    for name, args in (("nan", (bad, tiny_config())), ("odd_batch", (train_ex, tiny_config(batch_size=33)))):
        try:
            train(args[0], eval_ex, log, args[1])
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
    return out


@pytest.fixture(scope="module")
def two_ranks():
    return spawn_local(2, _rank_work, timeout_s=300)


@pytest.mark.training
@pytest.mark.parametrize("sharding", SHARDING_TYPES)
def test_each_sharding_trains_and_both_ranks_agree(two_ranks, sharding):
    r0, r1 = two_ranks[0][sharding], two_ranks[1][sharding]
    train_ex, eval_ex, log = tiny_tables()
    assert (r0.rank, r1.rank, r0.world_size, r1.world_size) == (0, 1, 2, 2)
    assert len(r0.losses) == 40 and r0.losses == r1.losses  # the global mean loss, on every rank
    assert np.mean(r0.losses[-10:]) < np.mean(r0.losses[:10]) - 0.1
    assert r0.eval_metrics == r1.eval_metrics and r0.eval_metrics["n_eval"] == eval_ex.num_rows
    assert r0.eval_metrics["auc"] > r0.eval_metrics["baseline_auc"]
    assert np.array_equal(r0.eval_scores, r1.eval_scores)
    # Rank 0 holds the gathered full tables; they load into the unsharded model and score as the sharded one did.
    assert r1.state_dict == {}
    assert r0.state_dict[ITEM].shape == (8192, 8)
    cfg = tiny_config(sharding, steps=40)
    np.testing.assert_allclose(predict(r0.state_dict, cfg, eval_ex, log), r0.eval_scores, rtol=0, atol=1e-6)


@pytest.mark.training
def test_world_size_2_trains_like_world_size_1(two_ranks):
    """Same initial weights, same seed: each rank's half of each global batch adds up to the
    one-process run (TorchRec divides the tables' gradients by the world size, DDP averages
    the dense ones). A rank training on the wrong share changes the first loss and the rows touched."""
    train_ex, eval_ex, log = tiny_tables()
    cfg = tiny_config(steps=2)
    start = initial_state(cfg)
    one = train(train_ex, eval_ex, log, cfg, init_state=start)
    touched_one = (one.state_dict[ITEM] != start[ITEM]).any(dim=1)
    assert 0 < int(touched_one.sum()) < 500  # two batches of 32 examples touch a small share of 8,192 rows
    for sharding in SHARDING_TYPES:
        two = two_ranks[0]["same_start", sharding]
        assert two_ranks[1]["same_start", sharding].losses == two.losses
        np.testing.assert_allclose(two.losses[0], one.losses[0], rtol=1e-6)
        assert torch.equal((two.state_dict[ITEM] != start[ITEM]).any(dim=1), touched_one)
        if sharding == "column_wise":
            continue  # RowWiseAdagrad keeps one momentum per row per column block: another optimizer
        np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
        for key, value in one.state_dict.items():
            torch.testing.assert_close(two.state_dict[key], value, rtol=0, atol=1e-5, msg=f"{sharding} {key}")


@pytest.mark.training
def test_non_finite_input_stops_every_rank(two_ranks):
    mine, other = two_ranks[1]["nan"], two_ranks[0]["nan"]
    assert "non-finite input: batch tensor 'labels' at step 1" in mine
    assert "rank 1 stopped" in other
    assert all("must be a multiple of the world size 2" in r["odd_batch"] for r in two_ranks)


@pytest.mark.training
def test_non_finite_input_is_refused_before_the_model():
    train_ex, eval_ex, log = tiny_tables()
    labels = train_ex.column("label").to_numpy().astype(np.float32)
    labels[5] = np.inf
    bad = train_ex.set_column(train_ex.schema.get_field_index("label"), "label", pa.array(labels))
    with pytest.raises(ValueError, match=r"batch tensor 'labels' at step \d+ holds 1 NaN/inf"):
        train(bad, eval_ex, log, tiny_config(steps=20))
    assert not dist.is_initialized()

    ids = np.unique(train_ex.column("item_id").to_numpy())
    table = torch.randn(len(ids) + 1, 4)
    table[0] = 0
    table[3, 1] = float("nan")
    vectors = ItemVectors("v-nan", ids, table)
    cfg = tiny_config(item_vectors=True)
    with pytest.raises(ValueError, match=f"item vectors \\(version 'v-nan'\\) hold NaN/inf in 1 row\\(s\\), "
                                         f"the first being item {ids[2]}"):
        train(train_ex, eval_ex, log, cfg, vectors=vectors)
    with pytest.raises(ValueError, match="item vectors"):
        predict(initial_state(cfg), cfg, eval_ex, log, vectors=vectors, model_meta=vectors.meta())


def test_config_names_valid_shardings_and_devices():
    with pytest.raises(ValueError, match="sharding must be one of .*'row_wise'.*got 'data_parallel'"):
        TrainConfig(sharding="data_parallel")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        TrainConfig(device="tpu")


@pytest.mark.training
def test_torchrun_launcher(tmp_path):
    train_ex, eval_ex, log = tiny_tables()
    for name, table in (("train", train_ex), ("eval", eval_ex), ("log", log)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    (tmp_path / "train.toml").write_text("embedding_dim = 8\nitem_table_size = 8192\ncategory_table_size = 8\n"
                                         "max_len = 8\nsparse_lr = 0.05\ndense_lr = 0.01\nthreads = 1\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trainers.launch", "--config", str(tmp_path / "train.toml"), "--steps", "12", "--batch-size", "32",
           "--sharding", "row_wise", "--out", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
           *[f"--{flag}={tmp_path / name}.parquet" for flag, name in (("train", "train"), ("eval", "eval"),
                                                                      ("behavior-log", "log"))]]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("step     12") == 1  # rank 0 alone reports
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["world_size"] == 2 and len(result["losses"]) == 12
    assert result["config"]["sharding"] == "row_wise" and result["checkpoint"].endswith("step-00000012")
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    cfg = tiny_config("row_wise", steps=12)
    SequenceRanker(cfg.model_config()).load_state_dict(state, strict=True)

    with pytest.raises(SystemExit, match="sharding must be one of"):
        config_from(parser().parse_args(["--sharding", "diagonal", "--train=x", "--eval=x", "--behavior-log=x"]))
    with pytest.raises(SystemExit, match=r"unknown key\(s\) \['stpes'\]; valid keys: \[.*'steps'"):
        (tmp_path / "typo.toml").write_text("stpes = 3\n")
        config_from(parser().parse_args(["--config", str(tmp_path / "typo.toml"), "--train=x", "--eval=x",
                                         "--behavior-log=x"]))
