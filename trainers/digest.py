"""One way to fingerprint files and records: sha256, hex; and a keyed one (HMAC-SHA256) to sign them.

A sha256 beside the data catches corruption, not tampering: whoever can edit the data can
recompute it. With $RECSTREAM_CHECKPOINT_KEY set, checkpoints are also signed with that key
and only checkpoints signed with it load (trainers/checkpoint.py).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

KEY_ENV = "RECSTREAM_CHECKPOINT_KEY"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record_sha256(record: dict) -> str:
    """The sha256 of a JSON-able record, independent of key order."""
    return hashlib.sha256(_canonical(record)).hexdigest()


def signing_key() -> bytes | None:
    """The key checkpoints are signed and checked with ($RECSTREAM_CHECKPOINT_KEY), or None."""
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def record_hmac(record: dict, key: bytes) -> str:
    """HMAC-SHA256 of a JSON-able record under ``key``, independent of key order."""
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def _canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True).encode()
