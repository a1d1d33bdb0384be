"""The model registry (MLflow, SQLite): versions, digests, the champion alias, promotion history, rollback."""
import multiprocessing
import sqlite3

import pytest
import torch

from trainers.registry import Registry, RegistryError


def _state(value: float) -> dict:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4, dtype=torch.int64)}


def test_round_trip_keeps_tensors_metadata_and_files(tmp_path):
    registry = Registry(tmp_path / "reg")
    extra = tmp_path / "ckpt"
    extra.mkdir()
    (extra / "shard.bin").write_bytes(b"optimizer state")
    version = registry.register("ranker", _state(1.5), {"auc": 0.71, "steps": 300}, files={"checkpoint": extra},
                                tags={"window": "3"}, metrics={"auc": 0.71})
    assert version == "1"
    state, meta = registry.load("ranker", version)
    assert torch.equal(state["w"], _state(1.5)["w"]) and torch.equal(state["b"], _state(1.5)["b"])
    assert meta == {"auc": 0.71, "steps": 300, "version": "1"}
    assert (registry.artifacts("ranker", version) / "checkpoint" / "shard.bin").read_bytes() == b"optimizer state"
    (listed,) = registry.versions("ranker")
    assert listed.tags["window"] == "3" and len(listed.tags["sha256"]) == 64 and listed.created.endswith("+00:00")
    assert registry.find("ranker", window="3") == "1" and registry.find("ranker", window="4") is None


def test_versions_count_up_per_model(tmp_path):
    registry = Registry(tmp_path)
    assert [registry.register("ranker", _state(i), {"i": i}) for i in range(3)] == ["1", "2", "3"]
    assert registry.register("retriever", _state(9), {}) == "1"
    assert [v.version for v in registry.versions("ranker")] == ["1", "2", "3"]
    assert registry.load("ranker", "2")[1]["i"] == 1
    assert registry.models() == ["ranker", "retriever"]


def test_a_corrupted_model_file_is_refused(tmp_path):
    registry = Registry(tmp_path)
    version = registry.register("ranker", _state(2.0), {})
    (model,) = (tmp_path / "artifacts").rglob("model.pt")  # the stored artifact, not a download
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="ranker version 1: .*model.pt is corrupt: sha256"):
        registry.load("ranker", version)


def test_champion_promote_reject_rollback_and_history(tmp_path):
    registry = Registry(tmp_path)
    assert registry.champion("ranker") is None
    with pytest.raises(RegistryError, match="no champion yet"):
        registry.load("ranker")
    v1, v2, v3 = (registry.register("ranker", _state(i), {"i": i}) for i in range(3))
    registry.promote("ranker", v1, by="demo", why="first")
    registry.promote("ranker", v2, by="loop", why="gates passed")
    registry.reject("ranker", None, by="loop", why="auc_drop")
    registry.promote("ranker", v3, by="loop", why="gates passed")
    assert registry.champion("ranker") == v3 and registry.load("ranker")[1]["i"] == 2
    assert registry.rollback("ranker", by="alice", why="CTR fell") == v2
    assert registry.champion("ranker") == v2 and registry.load("ranker")[1]["i"] == 1
    assert registry.rollback("ranker", by="alice", why="still bad") == v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("ranker")
    assert registry.rollback("ranker", to=v3, why="the fix is in") == v3
    history = registry.history("ranker")
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("register", "1", None), ("register", "2", None), ("register", "3", None),
        ("promote", "1", None), ("promote", "2", "1"), ("reject", None, "2"), ("promote", "3", "2"),
        ("rollback", "2", "3"), ("rollback", "1", "2"), ("rollback", "3", "1")]
    assert history[7]["who"] == "alice" and history[7]["why"] == "CTR fell" and history[7]["at"].endswith("+00:00")
    assert all(e["who"] for e in history)  # the user@host where none was given


def test_bad_requests_are_refused(tmp_path):
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="JSON-serializable"):
        registry.register("ranker", _state(1.0), {"when": object()})
    assert registry.versions("ranker") == []  # nothing half-written is visible
    registry.register("ranker", _state(1.0), {})
    with pytest.raises(RegistryError, match="ranker has no version '7'; it has \\['1'\\]"):
        registry.promote("ranker", "7")
    with pytest.raises(RegistryError, match="no version"):
        registry.load("ranker", "../etc")


def _register_many(root: str, writer: int) -> list[str]:
    registry = Registry(root)
    return [registry.register("ranker", _state(writer), {"writer": writer}) for _ in range(3)]


def test_concurrent_writers_get_distinct_versions(tmp_path):
    Registry(tmp_path).register("ranker", _state(0), {})  # the database exists before the writers race
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        got = pool.starmap(_register_many, [(str(tmp_path), w) for w in range(3)])
    versions = [v for vs in got for v in vs]
    assert len(set(versions)) == 9 and sorted(map(int, versions)) == list(range(2, 11))
    registry = Registry(tmp_path)
    for v in versions:  # each version holds what its writer registered
        writer = next(w for w, vs in enumerate(got) if v in vs)
        assert registry.load("ranker", v)[1]["writer"] == writer
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE action = 'register'").fetchone()[0] == 10
