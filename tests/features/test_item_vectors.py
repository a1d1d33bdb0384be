"""Trainer side of the item vectors: loading a version (newest row per item), exact and folded
lookups, and the version check. (The MUSE cosine search over them: tests/trainers/ranking/test_search_units.py.)"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from features.ids import fold
from features.item_vectors import (ITEM_EMBEDDING_SCHEMA, EmbeddingVersionMismatch, l2_normalize,
                                   set_serving_version, version_dir)
from trainers.item_vectors import META_KEY, load_item_vectors, require_version, vectors_for_model

DIM = 8


def write_version(work, version, rows, name="part-0.parquet"):
    """rows: (item_id, vector, embedded second, digest)."""
    folder = version_dir(work / "offline", version)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "item_id": pa.array([r[0] for r in rows], pa.int64()),
        "encoder_version": pa.array([version] * len(rows)),
        "vector": pa.array([list(map(float, r[1])) for r in rows], pa.list_(pa.float32())),
        "modalities": pa.array(["text"] * len(rows)),
        "content_digest": pa.array([r[3] for r in rows]),
        "embedded_ts": pa.array([datetime.fromtimestamp(r[2], timezone.utc) for r in rows],
                                pa.timestamp("us", tz="UTC")),
        "valid_from_ts": pa.array([datetime.fromtimestamp(r[2], timezone.utc) for r in rows],
                                  pa.timestamp("us", tz="UTC")),
    }, schema=ITEM_EMBEDDING_SCHEMA)
    pq.write_table(table, folder / name)


@pytest.fixture
def work(tmp_path):
    rng = np.random.default_rng(0)
    vecs = l2_normalize(rng.standard_normal((6, DIM)))
    write_version(tmp_path, "v1", [(10, vecs[0], 100, "a"), (20, vecs[1], 100, "b"), (30, vecs[2], 100, "c")])
    # A later run re-embedded item 20 (changed content) and added item 5.
    write_version(tmp_path, "v1", [(20, vecs[3], 200, "b2"), (5, vecs[4], 200, "e")], name="part-1.parquet")
    write_version(tmp_path, "v2", [(10, vecs[5], 300, "a")])
    set_serving_version(tmp_path / "offline", "v1")
    return tmp_path, vecs


def test_load_takes_the_newest_row_per_item(work):
    path, vecs = work
    iv = load_item_vectors(path)  # the serving version
    assert iv.version == "v1" and iv.dim == DIM and len(iv) == 4
    assert iv.ids.tolist() == [5, 10, 20, 30]
    assert not iv.table.requires_grad and not iv.table[0].any()
    expected = {5: vecs[4], 10: vecs[0], 20: vecs[3], 30: vecs[2]}
    for item, vec in expected.items():
        np.testing.assert_allclose(iv.table[iv.rows(np.array([item]))[0]].numpy(), vec, atol=1e-7)
    assert iv.rows(np.array([[30, 7], [5, -1]])).tolist() == [[4, 0], [1, 0]]
    vectors, found = iv.lookup(torch.tensor([20, 999, 10]))
    assert found.tolist() == [True, False, True]
    np.testing.assert_allclose(vectors[0].numpy(), vecs[3], atol=1e-7)
    assert not vectors[1].any()
    assert iv.meta() == {META_KEY: "v1"}
    some = load_item_vectors(path, item_ids=[20, 30, 999])
    assert some.ids.tolist() == [20, 30]
    np.testing.assert_allclose(some.table[1].numpy(), vecs[3], atol=1e-7)
    other = load_item_vectors(path, "v2")
    assert other.version == "v2" and other.ids.tolist() == [10]


def test_missing_version_and_damaged_folder(work):
    path, vecs = work
    with pytest.raises(FileNotFoundError, match=r"'v9'.*\['v1', 'v2'\]"):
        load_item_vectors(path, "v9")
    # Rows of another version inside a version folder: refused, not mixed in.
    folder = version_dir(path / "offline", "v2")
    table = pq.read_table(folder / "part-0.parquet")
    pq.write_table(table.set_column(1, "encoder_version", pa.array(["v1"])), folder / "stray.parquet")
    with pytest.raises(ValueError, match="other encoder versions"):
        load_item_vectors(path, "v2")


def test_folded_table_matches_a_naive_fold(work):
    path, _ = work
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**62, size=40)
    vecs = l2_normalize(rng.standard_normal((40, DIM)))
    write_version(path, "many", [(int(i), v, 1, "d") for i, v in zip(ids, vecs)])
    iv = load_item_vectors(path, "many")
    table, collisions = iv.folded_table(16)
    assert table.shape == (16, DIM) and not table[0].any()
    rows = fold(ids, 16)
    naive = {}
    for r, v in zip(rows, vecs):
        naive.setdefault(int(r), []).append(v)
    assert collisions == sum(len(v) for v in naive.values() if len(v) > 1) > 0
    for r in range(16):
        if r not in naive:
            assert not table[r].any()
        elif len(naive[r]) == 1:
            np.testing.assert_allclose(table[r].numpy(), naive[r][0], atol=1e-6)
        else:
            np.testing.assert_allclose(table[r].numpy(), l2_normalize(np.sum(naive[r], axis=0)), atol=1e-6)


def test_version_check_names_both_versions(work):
    path, _ = work
    require_version({META_KEY: "v1", "other": 1}, "v1")
    with pytest.raises(EmbeddingVersionMismatch, match=r"trained with encoder version 'v1'.*version 'v2'"):
        require_version({META_KEY: "v1"}, "v2")
    with pytest.raises(EmbeddingVersionMismatch, match="records no item embedding version"):
        require_version({"config": {}}, "v2")
    assert vectors_for_model(path, {META_KEY: "v1"}).version == "v1"  # the serving version matches
    set_serving_version(path / "offline", "v2")
    with pytest.raises(EmbeddingVersionMismatch, match="'v1'.*'v2'"):
        vectors_for_model(path, {META_KEY: "v1"})
    assert vectors_for_model(path, {META_KEY: "v1"}, version="v1").ids.tolist() == [5, 10, 20, 30]
