"""One way to fingerprint files and records: sha256, hex."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record_sha256(record: dict) -> str:
    """The sha256 of a JSON-able record, independent of key order."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
