"""Arrow -> KJT conversion on a hand-drawn example, batch iteration, and the model on such batches."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from features.labels import EXAMPLE_SCHEMA
from features.pit import sort_log
from features.tables import BEHAVIOR_LOG_SCHEMA
from trainers.spec import FeatureSpec, check_sorted
from trainers.ranking.batches import SPARSE_KEYS, epoch_batches, eval_batches, to_batch, training_batches
from trainers.ranking.model import ModelConfig, SequenceRanker

# item_table_size 1000: fold(id) = id % 999 + 1; category_table_size 100: fold(id) = id % 99 + 1.
SPEC = FeatureSpec(item_table_size=1000, category_table_size=100, max_len=5)

# user 10: three clicks, the last one exactly at example 0's time (so not in its history).
# user 20: one buy, an hour before example 2. user 30: no behaviors at all.
LOG = sort_log(pa.Table.from_pylist([
    {"user_id": 20, "timestamp": 1_000, "event_id": "e4", "item_id": 1020, "category_id": 7, "event_type_code": 6},
    {"user_id": 10, "timestamp": 60_000, "event_id": "e3", "item_id": 12, "category_id": 5, "event_type_code": 2},
    {"user_id": 10, "timestamp": 0, "event_id": "e1", "item_id": 10, "category_id": 5, "event_type_code": 2},
    {"user_id": 10, "timestamp": 59_000, "event_id": "e2", "item_id": 11, "category_id": 6, "event_type_code": 2},
], schema=BEHAVIOR_LOG_SCHEMA))

EXAMPLES = pa.Table.from_pylist([
    {"user_id": 10, "item_id": 13, "category_id": 6, "timestamp": 60_000, "label": 1},
    {"user_id": 30, "item_id": 30, "category_id": 8, "timestamp": 5_000, "label": 0},
    {"user_id": 20, "item_id": 21, "category_id": 7, "timestamp": 3_601_000, "label": 1},
], schema=EXAMPLE_SCHEMA)


def test_drawn_example_exact_values_lengths_offsets():
    batch = to_batch(EXAMPLES, LOG, SPEC)
    kjt = batch.sparse
    assert kjt.keys() == list(SPARSE_KEYS)
    # Row 0 sees e1 (60 s before: gap bucket 1+floor(log2(61)) = 6) and e2 (1 s before: bucket 2);
    # row 1 sees nothing; row 2 sees e4 (3600 s before: bucket 1+floor(log2(3601)) = 12).
    # Item 1020 folds to 1020 % 999 + 1 = 22. Every target's own gap is 0: bucket 1.
    assert kjt.values().tolist() == [14, 31, 22,  7, 9, 8,  1, 1, 1,  11, 12, 22,  6, 7, 8,  6, 2, 12]
    assert kjt.lengths().tolist() == [1, 1, 1,  1, 1, 1,  1, 1, 1,  2, 0, 1,  2, 0, 1,  2, 0, 1]
    assert kjt.offsets().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 11, 12, 14, 14, 15, 17, 17, 18]
    assert kjt["target_gap"].values().tolist() == [1, 1, 1]
    hist = kjt["hist_item"]
    assert hist.values().tolist() == [11, 12, 22]
    assert hist.offsets().tolist() == [0, 2, 2, 3]
    assert kjt["hist_gap"].values().tolist() == [6, 2, 12]
    assert batch.labels.dtype == torch.float32
    assert batch.labels.tolist() == [1.0, 0.0, 1.0]
    assert len(batch) == 3


def test_max_len_keeps_the_most_recent_behaviors():
    kjt = to_batch(EXAMPLES, LOG, FeatureSpec(1000, 100, max_len=1)).sparse
    assert kjt["hist_item"].values().tolist() == [12, 22]
    assert kjt["hist_item"].lengths().tolist() == [1, 0, 1]
    assert kjt["hist_gap"].values().tolist() == [2, 12]


def test_to_device_keeps_content():
    batch = to_batch(EXAMPLES, LOG, SPEC)
    moved = batch.to("cpu")
    assert torch.equal(moved.sparse.values(), batch.sparse.values())
    assert torch.equal(moved.sparse.lengths(), batch.sparse.lengths())
    assert torch.equal(moved.labels, batch.labels)


def test_eval_batches_keep_table_order():
    batches = list(eval_batches(EXAMPLES, LOG, SPEC, batch_size=2))
    assert [len(b) for b in batches] == [2, 1]
    assert [v for b in batches for v in b.sparse["target_item"].values().tolist()] == [14, 31, 22]
    # Splitting into batches changes nothing: the second batch is row 2 alone.
    assert batches[1].sparse["hist_item"].values().tolist() == [22]


def test_training_batches_are_seeded_full_shuffles():
    def first_epoch(seed):
        it = training_batches(EXAMPLES, LOG, SPEC, batch_size=1, seed=seed)
        return [next(it).sparse["target_item"].values().item() for _ in range(3)]

    assert sorted(first_epoch(0)) == [14, 22, 31]  # every row once per epoch
    assert first_epoch(0) == first_epoch(0)
    orders = {tuple(first_epoch(s)) for s in range(10)}
    assert len(orders) > 1


def test_training_drops_the_partial_batch_and_shuffle_matches_rows():
    batches = list(epoch_batches(EXAMPLES, LOG, SPEC, batch_size=2, seed=3, drop_last=True))
    assert len(batches) == 1 and len(batches[0]) == 2
    # Whatever the shuffle, each row's history stays its own.
    b = batches[0]
    hist = dict(zip(b.sparse["target_item"].values().tolist(),
                    np.split(b.sparse["hist_item"].values().numpy(), np.cumsum(b.sparse["hist_item"].lengths())[:-1])))
    expected = {14: [11, 12], 31: [], 22: [22]}
    for target, items in hist.items():
        assert items.tolist() == expected[target]


def test_unsorted_log_is_refused():
    unsorted = LOG.take(pa.array([3, 0, 1, 2]))
    with pytest.raises(ValueError, match="not sorted"):
        check_sorted(unsorted)
    with pytest.raises(ValueError, match="not sorted"):
        eval_batches(EXAMPLES, unsorted, SPEC, batch_size=2)


def test_model_on_drawn_batch_empty_history_is_finite_and_rows_are_independent():
    torch.manual_seed(0)
    model = SequenceRanker(ModelConfig(embedding_dim=4, item_table_size=1000, category_table_size=100, max_len=5),
                           sparse_device=torch.device("cpu"))
    batch = to_batch(EXAMPLES, LOG, SPEC)
    logits = model(batch.sparse)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Row 1 (empty history) alone gives the same logit as inside the batch.
    alone = model(to_batch(EXAMPLES.slice(1, 1), LOG, SPEC).sparse)
    assert torch.allclose(alone, logits[1:2], atol=1e-6)
    # Row 0 depends on its history: dropping e1 from the log changes its logit.
    fewer = sort_log(LOG.filter(pc.not_equal(LOG.column("event_id"), "e1")))
    assert not torch.allclose(model(to_batch(EXAMPLES.slice(0, 1), fewer, SPEC).sparse), logits[0:1])
