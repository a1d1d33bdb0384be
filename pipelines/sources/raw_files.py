"""Raw event files: JSON lines, the form every source is written to before the backfill."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

LINES_PER_FILE = 250_000


def write_json_lines(records: Iterable[str | bytes | dict], folder: Path, prefix: str = "events") -> int:
    """Write records (dicts, serialized lines, or a source's raw bytes, e.g. a CSV line that is
    not UTF-8, its fields joined by commas, for validation to reject) into numbered files;
    returns the count."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{prefix}-*.jsonl"):
        old.unlink()
    count, part, out = 0, 0, None
    try:
        for rec in records:
            if out is None or count % LINES_PER_FILE == 0:
                if out:
                    out.close()
                out = open(folder / f"{prefix}-{part:05d}.jsonl", "wb")
                part += 1
            out.write(_line(rec) + b"\n")
            count += 1
    finally:
        if out:
            out.close()
    return count


def _line(rec: str | bytes | dict) -> bytes:
    if isinstance(rec, bytes):
        return rec
    text = rec if isinstance(rec, str) else json.dumps(rec, default=str)
    return text.encode("utf-8", errors="surrogatepass")
