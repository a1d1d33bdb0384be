"""A local model registry: numbered versions in a folder and a champion pointer.

Layout::

    <root>/v0001/model.pt        torch.save of the state_dict
    <root>/v0001/metadata.json   caller metadata + version, sha256 of model.pt, created (UTC ISO-8601)
    <root>/CHAMPION              the champion's version string, replaced atomically

A version folder is written under a temporary name and renamed into place, so a
reader never sees a half-written version; load() re-hashes model.pt and refuses
a file whose digest differs from the one recorded at registration.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from features.errors import StateError
from trainers.digest import file_sha256

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "CHAMPION"
VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
RESERVED_KEYS = ("version", "sha256", "created")


class RegistryError(StateError):
    """A registry entry is missing, corrupt or not what was asked for."""


def versions(root: str | Path) -> list[str]:
    """Registered versions, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
    return sorted(found, key=lambda v: int(v[1:]))


def register(root: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> str:
    """Write a new version (the next number) and return its name, e.g. "v0003"."""
    clash = [k for k in RESERVED_KEYS if k in metadata]
    if clash:
        raise ValueError(f"metadata may not set the registry's own keys {clash}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serializable: {err}") from err
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        torch.save(state_dict, staging / MODEL_FILE)
        record = {**metadata, "sha256": file_sha256(staging / MODEL_FILE),
                  "created": datetime.now(timezone.utc).isoformat()}
        for _ in range(100):  # another writer may take the number first; take the next one
            existing = versions(root)
            version = f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"
            (staging / METADATA_FILE).write_text(json.dumps({**record, "version": version}, indent=2,
                                                            sort_keys=True))
            try:
                os.rename(staging, root / version)  # fails if the folder exists: no overwrite
                return version
            except OSError:
                if not (root / version).exists():
                    raise
        raise RegistryError(f"could not claim a version number under {root}")
    finally:
        if staging.exists():
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()


def metadata(root: str | Path, version: str) -> dict:
    path = _version_dir(root, version) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RegistryError(f"cannot read {path}: {err}") from err


def load(root: str | Path, version: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) of a version, after checking model.pt against its recorded sha256."""
    meta = metadata(root, version)
    path = _version_dir(root, version) / MODEL_FILE
    if not path.is_file():
        raise RegistryError(f"{path} is missing")
    digest = file_sha256(path)
    if digest != meta.get("sha256"):
        raise RegistryError(f"{path} is corrupt: sha256 {digest} differs from the recorded {meta.get('sha256')}")
    return torch.load(path, map_location="cpu", weights_only=True), meta


def set_champion(root: str | Path, version: str) -> None:
    """Point CHAMPION at an existing version (atomic replace of the pointer file)."""
    _version_dir(root, version)
    root = Path(root)
    tmp = root / f".{CHAMPION_FILE}.{os.getpid()}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / CHAMPION_FILE)


def champion(root: str | Path) -> str | None:
    """The champion version, or None if none was set."""
    path = Path(root) / CHAMPION_FILE
    if not path.is_file():
        return None
    version = path.read_text().strip()
    _version_dir(root, version)
    return version


def _version_dir(root: str | Path, version: str) -> Path:
    if not VERSION_PATTERN.match(version):
        raise RegistryError(f"{version!r} is not a version name like v0001")
    path = Path(root) / version
    if not path.is_dir():
        raise RegistryError(f"version {version} does not exist under {root}")
    return path

