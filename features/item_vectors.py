"""Item content vectors, engine-free: text cleaning, content digests, the fused-vector
math (fixed seeded projections, normalization), the deterministic fallback, and the
on-disk layout of versioned embeddings. numpy and pyarrow only; the encoders that
produce modality vectors live in pipelines/embed/encoders.py.

Layout under a run's offline folder::

    item_embeddings/version=<v>/part-*.parquet   ITEM_EMBEDDING_SCHEMA rows, append-only
    item_embeddings/_manifests/<v>.json           the encoder spec and fingerprint of version v
    item_embeddings/_serving.json                 {"version": v}: the version Feast serves
    item_embeddings/_rejected/version=<v>/        named issues (dead letters) per version
    item_embeddings/_counts.json                  counts of the last run
    item_embeddings/_staging/<run>/               a running or killed run's files (never read)

Names starting with "_" are skipped by Arrow and Dask dataset readers, so reading
``version=<v>/`` or the whole folder sees only embedding rows.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from features.errors import RecstreamError
from features.validate import MIN_TIMESTAMP_MS

ITEM_EMBEDDINGS = "item_embeddings"
DEFAULT_VERSION = "mm-v1"
SERVING_FILE = "_serving.json"
MANIFESTS = "_manifests"
REJECTED = "_rejected"
STAGING = "_staging"  # a running (or killed) embed run's files, before they move into place
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Named repairs: content used after a declared fix (the rejections, content given but
# unusable, are listed with them in docs/embeddings.md).
REPAIRS = {
    "text_not_utf8": "text bytes were not UTF-8; undecodable bytes became U+FFFD",
    "text_truncated": "text longer than the encoder takes (characters or word pieces) was cut",
}

ITEM_EMBEDDING_SCHEMA = pa.schema([
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("encoder_version", pa.string(), nullable=False),
    pa.field("vector", pa.list_(pa.float32()), nullable=False),
    pa.field("modalities", pa.string(), nullable=False),  # "text", "image", "text+image" or "fallback"
    pa.field("content_digest", pa.string(), nullable=False),
    pa.field("embedded_ts", pa.timestamp("us", tz="UTC"), nullable=False),  # the run's time: orders an item's rows
    # From when the vector describes the item (the item_content view's event time, so point-in-time
    # reads inside the data's range find it): the catalog's valid_from where it has one, else
    # VALID_SINCE_EVER for an item's first vector in its version, else (changed content) the run's time.
    pa.field("valid_from_ts", pa.timestamp("us", tz="UTC"), nullable=False),
])
VALID_SINCE_EVER_MS = MIN_TIMESTAMP_MS  # 1990-01-01, the oldest time an event may have

ISSUE_SCHEMA = pa.schema([
    pa.field("item_id", pa.int64()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),  # repaired | modality_dropped | fallback | dropped
    pa.field("detail", pa.string(), nullable=False),
    pa.field("raw", pa.string()),
])


class EmbeddingVersionMismatch(RecstreamError, ValueError):
    """A model and the item vectors it is handed come from different encoder versions."""

    def __init__(self, model_version: str | None, vectors_version: str | None):
        self.model_version, self.vectors_version = model_version, vectors_version
        if model_version is None:
            message = (f"item embedding version mismatch: the model records no item embedding version (it "
                       f"was not trained with item vectors) but was handed vectors of version "
                       f"{vectors_version!r}; retrain it on version {vectors_version!r}")
        else:
            message = (f"item embedding version mismatch: the model was trained with encoder version "
                       f"{model_version!r} but the item vectors are version {vectors_version!r}; serve the "
                       f"vectors of version {model_version!r} (recstream embed --version {model_version} "
                       f"--serve) or retrain the model on version {vectors_version!r}")
        super().__init__(message)


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ValueError(f"encoder version {version!r} must be 1-64 characters of letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit (it names a folder)")
    return version


# ---- layout ---------------------------------------------------------------------------------

def embeddings_root(offline_dir: str | Path) -> Path:
    return Path(offline_dir) / ITEM_EMBEDDINGS


def version_dir(offline_dir: str | Path, version: str) -> Path:
    return embeddings_root(offline_dir) / f"version={check_version_name(version)}"


def serving_version(offline_dir: str | Path) -> str | None:
    """The version Feast serves (from _serving.json), or None before any is set."""
    file = embeddings_root(offline_dir) / SERVING_FILE
    if not file.exists():
        return None
    return check_version_name(json.loads(file.read_text(encoding="utf-8"))["version"])


def set_serving_version(offline_dir: str | Path, version: str) -> None:
    """Point serving at ``version`` (atomic replace of _serving.json)."""
    root = embeddings_root(offline_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{SERVING_FILE}.tmp"
    tmp.write_text(json.dumps({"version": check_version_name(version)}), encoding="utf-8")
    tmp.replace(root / SERVING_FILE)


def manifest(offline_dir: str | Path, version: str) -> dict | None:
    """The recorded encoder spec of ``version`` (pipelines/embed/job.py writes it), or None."""
    file = embeddings_root(offline_dir) / MANIFESTS / f"{check_version_name(version)}.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.exists() else None


def embedded_versions(offline_dir: str | Path) -> list[str]:
    root = embeddings_root(offline_dir)
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.iterdir() if p.is_dir() and p.name.startswith("version="))


# ---- text -----------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")


def prepare_text(raw: str | bytes | None, max_chars: int) -> tuple[str | None, list[tuple[str, str]]]:
    """Raw text -> (clean text or None, issues). Bytes are decoded as UTF-8 (undecodable bytes
    become U+FFFD: a repair), control characters dropped, whitespace collapsed, and text over
    ``max_chars`` cut at a word boundary where one is near (a repair). Blank text is None."""
    issues: list[tuple[str, str]] = []
    if raw is None:
        return None, issues
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as err:
            issues.append(("text_not_utf8", f"byte {err.start}: {err.reason}"))
            raw = data.decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        raw = str(raw)
    else:
        try:
            raw[: 4 * max_chars + 1].encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates: a str that no UTF-8 encoder accepts
            issues.append(("text_not_utf8", f"character {err.start}: {err.reason}"))
            raw = raw.encode("utf-8", errors="replace").decode("utf-8")
    # Cleaning never needs more than a few times max_chars: cut huge inputs before looking at them.
    text = _SPACE.sub(" ", _CONTROL.sub(" ", raw[: 4 * max_chars + 1])).strip()
    if not text:
        issues.append(("text_empty", f"{len(raw)} characters, none printable"))
        return None, issues
    if len(text) > max_chars or len(raw) > 4 * max_chars + 1:
        cut = text.rfind(" ", max(0, max_chars - 64), max_chars)
        text = text[: cut if cut > 0 else max_chars].rstrip()
        issues.append(("text_truncated", f"{len(raw)} characters cut to {len(text)}"))
    return text, issues


def content_digest(text: str | None, image_ref: str | None, image_digest: str | None) -> str:
    """What an item's vector depends on (besides the encoder version): its clean text and its
    image bytes. An item whose digest is unchanged is not embedded again."""
    h = hashlib.blake2b(digest_size=16)
    for part in (text, image_ref, image_digest):
        h.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8", errors="surrogatepass") + b"\x00")
    return h.hexdigest()


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ---- vector math ----------------------------------------------------------------------------

def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


def projection(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """A fixed (in_dim, out_dim) projection drawn from ``seed``: orthonormal rows when
    in_dim <= out_dim (dot products kept exactly), a random orthonormal subspace otherwise
    (dot products kept approximately, Johnson-Lindenstrauss). Same arguments, same matrix."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projection dims must be >= 1, got {in_dim} -> {out_dim}")
    rng = np.random.default_rng([seed, in_dim, out_dim])
    a = rng.standard_normal((max(in_dim, out_dim), min(in_dim, out_dim)))
    q, r = np.linalg.qr(a)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # a unique Q: diag(R) > 0
    return (q if in_dim >= out_dim else q.T).astype(np.float32)


def fuse(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Fused item vectors: sum over modalities of weight * normalize(vectors @ projection)
    for the rows where that modality is present, normalized.

    ``parts``: (vectors (n, d_i), present (n,) bool, projection (d_i, D), weight).
    Returns (fused (n, D) float32 unit rows, any_present (n,) bool); rows with no
    modality present are zero (give them ``fallback_vectors``)."""
    if not parts:
        raise ValueError("fuse needs at least one modality")
    n, out_dim = parts[0][0].shape[0], parts[0][2].shape[1]
    total = np.zeros((n, out_dim), dtype=np.float32)
    any_present = np.zeros(n, dtype=bool)
    for vectors, present, proj, weight in parts:
        present = np.asarray(present, dtype=bool)
        projected = l2_normalize(np.asarray(vectors, dtype=np.float32) @ proj)
        total += np.float32(weight) * projected * present[:, None]
        any_present |= present
    return l2_normalize(total), any_present


def fallback_vectors(item_ids: np.ndarray | list[int], dim: int, seed: int) -> np.ndarray:
    """A deterministic unit vector per item ID (seeded by the ID), for items with no usable
    content. Random directions: near-orthogonal to every real vector and to each other, so
    a cosine search neither favors nor avoids them."""
    ids = np.asarray(item_ids, dtype=np.int64)
    out = np.empty((len(ids), dim), dtype=np.float32)
    for i, item in enumerate(ids.tolist()):
        unsigned = item & 0xFFFFFFFFFFFFFFFF
        out[i] = np.random.default_rng([seed, unsigned & 0xFFFFFFFF, unsigned >> 32]).standard_normal(dim)
    return l2_normalize(out)


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per item_id: the most recently embedded (ties: the greatest content_digest)."""
    if table.num_rows == 0:
        return table
    order = np.lexsort((table.column("content_digest").to_numpy(zero_copy_only=False),
                        table.column("embedded_ts").cast(pa.int64()).to_numpy(),
                        table.column("item_id").to_numpy()))
    ids = table.column("item_id").to_numpy()[order]
    last = np.ones(len(ids), dtype=bool)
    last[:-1] = ids[1:] != ids[:-1]
    return table.take(pa.array(order[last]))
