"""The training benches measure what they say: bench/train_throughput.py's plain path is the same
model as the TorchRec one (same logits from the same weights), and bench/ranker_real.py runs end to
end on the Taobao slice with model selection on validation only."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from bench.train_throughput import make_batches, make_plain_sparse_arch, model_config
from trainers.ranking.model import SequenceRanker


@pytest.mark.parametrize("pooling,search,length", [("mean", "none", 8), ("din", "none", 8), ("tin", "none", 8),
                                                   ("tin", "category", 300), ("tin", "dare", 300)])
def test_plain_path_is_the_same_model_as_the_torchrec_path(pooling, search, length):
    cfg = model_config(pooling, search, length, k=5)
    torch.manual_seed(0)
    torchrec_model = SequenceRanker(cfg, sparse_device=torch.device("cpu"))
    plain = SequenceRanker(cfg, sparse_device=torch.device("meta"))
    plain.sparse_arch = make_plain_sparse_arch(cfg)
    state = torchrec_model.state_dict()
    names = {"ec": "main", "temporal": "main", "attention": "att", "attention_temporal": "att"}
    for key, value in state.items():
        if key.startswith("sparse_arch."):  # sparse_arch.<collection>.embeddings.<table>.weight
            _, collection, _, table, _ = key.split(".")
            plain_table = table.removesuffix("_att")
            getattr(plain.sparse_arch, names[collection])[plain_table].weight.data.copy_(value)
        else:
            plain.state_dict()[key].copy_(value)
    kjt, labels = make_batches(1, 16, length)[0]
    got, want = plain(kjt), torchrec_model(kjt)
    torch.testing.assert_close(got, want)
    F.binary_cross_entropy_with_logits(got, labels).backward()  # sparse gradients reach the plain tables
    assert plain.sparse_arch.main["item"].weight.grad.is_sparse


@pytest.mark.training
def test_ranker_real_runs_on_the_taobao_slice(shared_data):
    from bench.ranker_real import run_dataset, table, taobao

    args = argparse.Namespace(seeds=[0, 1], models=["mean", "tin+category"], sparse_lr=[0.01, 0.1], max_len=20,
                              search_len=100, search_k=10)
    out = run_dataset("taobao slice", taobao(shared_data / "taobao-userbehavior-slice", "uniform"), args, steps=20)
    assert all(n > 0 for n in out["rows"])
    assert out["tables"]["item_id"]["rows"] >= out["tables"]["item_id"]["distinct"]  # sized from the data
    assert set(out["methods"]) == {"popularity", "popularity (7 d)", "mean", "tin+category"}
    for method in ("mean", "tin+category"):
        m = out["methods"][method]
        # The learning rate kept is the one with the best validation GAUC at the first seed.
        best = max(m["seed0_valid_gauc"].items(), key=lambda kv: kv[1])[0]
        assert float(best) == m["sparse_lr"] and [r["seed"] for r in m["runs"]] == [0, 1]
        assert all(r["sparse_lr"] == m["sparse_lr"] and 0 <= r["test"]["gauc"] <= 1 for r in m["runs"])
    assert "| taobao slice | tin+category |" in table([out])
