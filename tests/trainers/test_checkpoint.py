"""DCP checkpoints: resume == uninterrupted run (world size 1 and 2), metadata, unsharded load for
serving, refusal of another model config and of corrupted files."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.trainers.test_distributed import tiny_config, tiny_tables
from trainers import checkpoint
from trainers.checkpoint import CheckpointError, CheckpointMismatch, latest, load_unsharded, read_metadata
from trainers.launch import spawn_local
from trainers.ranking.model import SequenceRanker
from trainers.ranking.train import predict, train

# 480 training rows / 96 = 5 batches an epoch: step 6 is inside epoch 1, and 6 -> 12 crosses into epoch 2.
BATCH, K = 96, 6


def config(steps: int, sharding: str = "row_wise", **kw):
    return tiny_config(sharding, steps=steps, batch_size=BATCH, **kw)


def straight_and_resumed(root: str, sharding: str = "row_wise") -> tuple:
    """2K steps straight; K steps saving checkpoints (every 4 and at the end); K more resumed from root's
    latest, saving at the end."""
    train_ex, eval_ex, log = tiny_tables()
    straight = train(train_ex, eval_ex, log, config(2 * K, sharding))
    first = train(train_ex, eval_ex, log, config(K, sharding), checkpoint_dir=root, checkpoint_every=4)
    resumed = train(train_ex, eval_ex, log, config(2 * K, sharding), checkpoint_dir=root, resume_from=root)
    return straight, first, resumed


def meta_model(root) -> dict:
    return read_metadata(root / "step-00000006")["model_config"]


def assert_resumed_exactly(straight, first, resumed):
    assert resumed.start_step == K and len(resumed.losses) == K
    np.testing.assert_allclose(first.losses, straight.losses[:K], rtol=0, atol=0)
    np.testing.assert_allclose(resumed.losses, straight.losses[K:], rtol=1e-6, atol=1e-7)
    assert resumed.eval_metrics["auc"] == pytest.approx(straight.eval_metrics["auc"], abs=1e-6)
    for key, value in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value, rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return root, straight_and_resumed(str(root))


@pytest.mark.training
def test_resume_continues_exactly(run):
    root, (straight, first, resumed) = run
    assert_resumed_exactly(straight, first, resumed)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000006", "step-00000012"]
    assert first.checkpoint == str(root / "step-00000006") and latest(root) == root / "step-00000012"
    assert resumed.checkpoint == str(root / "step-00000012")


@pytest.mark.training
def test_metadata_describes_the_run(run):
    root, (_, first, _) = run
    meta = read_metadata(root / "step-00000006")
    cfg = config(K)
    assert meta["position"] == {"step": 6, "epoch": 1, "batch_in_epoch": 1}
    assert meta["train_config"]["steps"] == K and meta["train_config"]["seed"] == cfg.seed
    assert meta["model_config"]["embedding_dim"] == 8 and meta["model_config"]["item_table_size"] == 8192
    assert meta["feature_spec"] == {"item_table_size": 8192, "category_table_size": 8, "max_len": 8}
    assert meta["item_embedding_version"] is None and meta["world_size"] == 1
    assert meta["data"]["train_examples"] == 480 and len(meta["data"]["examples_sha256"]) == 64
    assert set(meta["files"]) == {".metadata", "__0_0.distcp"} and len(meta["digest"]) == 64


@pytest.mark.training
def test_unsharded_load_for_serving(run):
    root, (_, first, _) = run
    assert not dist.is_initialized()
    state, meta = load_unsharded(root / "step-00000006", expected={"model_config": meta_model(root)})
    assert sorted(state) == sorted(first.state_dict)
    for key, value in first.state_dict.items():
        assert torch.equal(state[key], value), key
    SequenceRanker(config(K).model_config()).load_state_dict(state, strict=True)
    train_ex, eval_ex, log = tiny_tables()
    np.testing.assert_allclose(predict(state, config(K), eval_ex, log), first.eval_scores, rtol=0, atol=1e-6)
    assert not dist.is_initialized()


@pytest.mark.training
def test_another_model_or_run_is_refused(run):
    root, _ = run
    train_ex, eval_ex, log = tiny_tables()
    with pytest.raises(CheckpointMismatch, match=r"model_config\.embedding_dim: checkpoint 8, this run 12"):
        train(train_ex, eval_ex, log, config(2 * K, embedding_dim=12), resume_from=root)
    with pytest.raises(CheckpointMismatch, match=r"train_config\.seed: checkpoint 0, this run 5"):
        train(train_ex, eval_ex, log, config(2 * K, seed=5), resume_from=root)
    with pytest.raises(CheckpointMismatch, match=r"data\.examples_sha256"):
        train(train_ex.slice(1), eval_ex, log, config(2 * K), resume_from=root)
    other = {**meta_model(root), "item_table_size": 4096}
    with pytest.raises(CheckpointMismatch, match=r"model_config\.item_table_size: checkpoint 8192, this run 4096"):
        load_unsharded(root, expected={"model_config": other})
    assert not dist.is_initialized()  # train() made and destroyed its group despite the error
    # Steps already done: nothing to train, nothing new written.
    done = train(train_ex, eval_ex, log, config(2 * K), resume_from=root)
    assert done.losses == [] and done.start_step == 2 * K and done.checkpoint is None


@pytest.mark.training
def test_corrupted_checkpoint_is_refused(run, tmp_path):
    root, _ = run
    train_ex, eval_ex, log = tiny_tables()
    bad = tmp_path / "step-00000006"
    shutil.copytree(root / "step-00000006", bad)
    data = bytearray((bad / "__0_0.distcp").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "__0_0.distcp").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is corrupt: __0_0\.distcp has sha256"):
        load_unsharded(bad)
    with pytest.raises(CheckpointError, match=r"is corrupt: __0_0\.distcp"):
        train(train_ex, eval_ex, log, config(2 * K), resume_from=bad)

    shutil.copyfile(root / "step-00000006" / "__0_0.distcp", bad / "__0_0.distcp")
    meta = json.loads((bad / checkpoint.META_FILE).read_text())
    meta["position"]["step"] = 5
    (bad / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="recstream.json was modified"):
        load_unsharded(bad)
    shutil.copyfile(root / "step-00000006" / checkpoint.META_FILE, bad / checkpoint.META_FILE)
    load_unsharded(bad)  # restored: loads again
    (bad / ".metadata").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: \.metadata is missing"):
        load_unsharded(bad)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_unsharded(tmp_path / "nothing-here")


def _resume_at_two_ranks(root: str, cw_root: str) -> tuple:
    out = straight_and_resumed(root, "row_wise")
    train_ex, eval_ex, log = tiny_tables()
    train(train_ex, eval_ex, log, config(2, "column_wise"), checkpoint_dir=cw_root)
    return out


@pytest.mark.training
def test_resume_at_world_size_2_and_on_one_rank(tmp_path):
    """Resume on 2 ranks equals the uninterrupted 2-rank run; the same checkpoint resharded
    onto one process continues the same trajectory (gradients are global-batch means)."""
    cw = tmp_path / "cw"
    ranks = spawn_local(2, _resume_at_two_ranks, str(tmp_path), str(cw), timeout_s=300)
    straight, first, resumed = ranks[0]
    assert_resumed_exactly(straight, first, resumed)
    assert ranks[1][2].losses == resumed.losses
    assert set(read_metadata(tmp_path / "step-00000006")["files"]) == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    train_ex, eval_ex, log = tiny_tables()
    alone = train(train_ex, eval_ex, log, config(2 * K), resume_from=tmp_path / "step-00000006")
    np.testing.assert_allclose(alone.losses, straight.losses[K:], rtol=1e-5)
    # column_wise keeps optimizer state per column block: another world size is refused by name.
    with pytest.raises(CheckpointMismatch, match="column_wise at world size 2.*not 1"):
        train(train_ex, eval_ex, log, config(2 * K, "column_wise"), resume_from=cw)


@pytest.mark.training
def test_a_key_signs_checkpoints_and_only_signed_ones_load(run, tmp_path, monkeypatch):
    root, _ = run
    train_ex, eval_ex, log = tiny_tables()
    monkeypatch.setenv("RECSTREAM_CHECKPOINT_KEY", "k1")
    signed = train(train_ex, eval_ex, log, config(4), checkpoint_dir=str(tmp_path / "signed")).checkpoint
    load_unsharded(signed)
    with pytest.raises(CheckpointError, match="is not signed, and RECSTREAM_CHECKPOINT_KEY is set"):
        load_unsharded(root / "step-00000006")
    # Whoever edits a record and recomputes its sha256 digest cannot recompute the signature.
    forged = tmp_path / "forged"
    shutil.copytree(signed, forged)
    meta = json.loads((forged / checkpoint.META_FILE).read_text())
    meta["position"]["step"] = 1
    meta["digest"] = checkpoint._digest(meta)
    (forged / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="signature does not match RECSTREAM_CHECKPOINT_KEY"):
        load_unsharded(forged)
    del meta["signature"]
    (forged / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="is not signed"):
        load_unsharded(forged)
    monkeypatch.setenv("RECSTREAM_CHECKPOINT_KEY", "k2")
    with pytest.raises(CheckpointError, match="signature does not match"):
        load_unsharded(signed)
    monkeypatch.delenv("RECSTREAM_CHECKPOINT_KEY")
    with pytest.raises(CheckpointError, match="is signed: set RECSTREAM_CHECKPOINT_KEY"):
        load_unsharded(signed)
    load_unsharded(root / "step-00000006")  # unsigned ones load as before


def test_a_checkpoint_older_than_a_config_field_is_read_with_its_default():
    """Checkpoints written before DIEN/SDIM's fields existed resume under the defaults, not under others."""
    ours = {"model_config": {"embedding_dim": 8}, "train_config": {"steps": 5}}
    now = {"model_config": {"embedding_dim": 8, **checkpoint.ADDED_FIELDS},
           "train_config": {"steps": 5, **checkpoint.ADDED_FIELDS}}
    checkpoint.check_compatible(ours, now)
    now["model_config"]["sdim_bits"] = 4
    with pytest.raises(CheckpointMismatch, match=r"model_config\.sdim_bits: checkpoint 3, this run 4"):
        checkpoint.check_compatible(ours, now)
