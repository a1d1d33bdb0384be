"""The local model registry: versions, digests, champion pointer."""
import json

import pytest
import torch

from trainers import registry
from trainers.registry import RegistryError


def _state(value: float) -> dict:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4, dtype=torch.int64)}


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    version = registry.register(tmp_path, _state(1.5), {"auc": 0.71, "steps": 300})
    assert version == "v0001"
    state, meta = registry.load(tmp_path, version)
    assert torch.equal(state["w"], _state(1.5)["w"]) and torch.equal(state["b"], _state(1.5)["b"])
    assert meta["auc"] == 0.71 and meta["steps"] == 300 and meta["version"] == "v0001"
    assert len(meta["sha256"]) == 64 and meta["created"].endswith("+00:00")
    assert json.loads((tmp_path / "v0001" / "metadata.json").read_text()) == meta


def test_versions_count_up_and_never_overwrite(tmp_path):
    assert [registry.register(tmp_path, _state(i), {"i": i}) for i in range(3)] == ["v0001", "v0002", "v0003"]
    assert registry.versions(tmp_path) == ["v0001", "v0002", "v0003"]
    assert registry.load(tmp_path, "v0002")[1]["i"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_corrupted_model_file_is_detected(tmp_path):
    version = registry.register(tmp_path, _state(2.0), {})
    path = tmp_path / version / "model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="v0001/model.pt is corrupt"):
        registry.load(tmp_path, version)


def test_champion_pointer(tmp_path):
    assert registry.champion(tmp_path) is None
    first = registry.register(tmp_path, _state(1.0), {})
    second = registry.register(tmp_path, _state(2.0), {})
    registry.set_champion(tmp_path, first)
    assert registry.champion(tmp_path) == "v0001"
    registry.set_champion(tmp_path, second)
    assert registry.champion(tmp_path) == "v0002"
    assert (tmp_path / "CHAMPION").read_text() == "v0002\n"
    assert not list(tmp_path.glob(".CHAMPION*"))  # the temporary file was renamed away
    with pytest.raises(RegistryError, match="does not exist"):
        registry.set_champion(tmp_path, "v0009")
    assert registry.champion(tmp_path) == "v0002"


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="registry's own keys"):
        registry.register(tmp_path, _state(1.0), {"sha256": "x"})
    with pytest.raises(ValueError, match="JSON-serializable"):
        registry.register(tmp_path, _state(1.0), {"when": object()})
    with pytest.raises(RegistryError, match="not a version name"):
        registry.load(tmp_path, "../etc")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.load(tmp_path, "v0001")
    assert registry.versions(tmp_path) == []
