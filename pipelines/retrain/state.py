"""What the loop keeps on disk, under WORKDIR/retrain/, so that a kill -9 anywhere loses nothing:

    checkpoints/window-000012/   one per window, complete once renamed from .partial:
        loop.json                  where every stream was read to, the examples already seen,
                                   the drift reference, the champion each model line holds
        ranker/, retriever/        DCP checkpoints of each model line (weights and optimizer state)
    log/window-000012.parquet    the behaviors (accepted records) each window added to the log
    quarantine/window-000007/    a window the data gate refused: its records and the verdict
    windows.jsonl                one record per window: counts, gates, metrics, decisions, times

A window's work is committed by the rename of its checkpoint folder. A restarted loop starts
from the newest complete checkpoint: it reads the streams from that checkpoint's positions,
drops log files of later windows, and so redoes the interrupted window from the same state.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import StateError

FORMAT = "recstream-retrain-1"
LOOP_FILE = "loop.json"


@dataclass
class LoopState:
    """The loop's position in its streams and what it remembers between windows."""

    loop_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    window: int = 0  # the last window done (0: none yet)
    positions: dict = field(default_factory=lambda: {"examples": {}, "accepted": {}})
    seen: dict = field(default_factory=dict)  # example digest -> event time (pipelines.retrain.records.Seen)
    newest_ms: int = 0  # the newest example time of the windows trained on
    reference: dict = field(default_factory=dict)  # drift reference: feature -> values (recent accepted windows)
    lines: dict = field(default_factory=dict)  # model kind -> its line's config, champion version, item vectors
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Store:
    """The loop's folder."""

    def __init__(self, folder: Path, keep: int = 3):
        self.folder, self.keep = Path(folder), keep
        self.checkpoints = self.folder / "checkpoints"
        for sub in ("checkpoints", "log", "quarantine"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        done = sorted(p for p in self.checkpoints.glob("window-*") if not p.name.endswith(".partial")
                      and (p / LOOP_FILE).is_file())
        return done[-1] if done else None

    def read(self, path: Path) -> LoopState:
        try:
            data = json.loads((path / LOOP_FILE).read_text())
        except (OSError, ValueError) as err:
            raise StateError(f"cannot read the retrain checkpoint {path}: {err}") from None
        if data.pop("format", None) != FORMAT:
            raise StateError(f"{path / LOOP_FILE} is not a {FORMAT} checkpoint")
        return LoopState(**data)

    def write(self, state: LoopState, learners: dict, before_commit=lambda: None) -> Path:
        """Save every learner and the state as checkpoint ``state.window``, then commit it (rename)."""
        final = self.checkpoints / f"window-{state.window:06d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for kind, learner in learners.items():
            learner.save(partial / kind)
        before_commit()
        _write_json(partial / LOOP_FILE, {"format": FORMAT, **asdict(state)})
        shutil.rmtree(final, ignore_errors=True)
        os.rename(partial, final)
        for old in sorted(p for p in self.checkpoints.glob("window-*") if not p.name.endswith(".partial"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def log_file(self, window: int) -> Path:
        return self.folder / "log" / f"window-{window:06d}.parquet"

    def write_log(self, window: int, rows: pa.Table) -> None:
        path = self.log_file(window)
        tmp = path.with_suffix(".tmp")
        pq.write_table(rows, tmp)
        os.replace(tmp, path)

    def log_tables(self, up_to: int) -> list[pa.Table]:
        """The behaviors of windows 1..up_to; later windows' files (from an interrupted window) are removed."""
        out = []
        for path in sorted((self.folder / "log").glob("window-*.parquet")):
            if int(path.stem.split("-")[1]) > up_to:
                path.unlink()
            else:
                out.append(pq.read_table(path))
        return out

    def quarantine(self, window: int, values: list[bytes], verdict: dict) -> Path:
        folder = self.folder / "quarantine" / f"window-{window:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "records.jsonl").write_bytes(b"".join(v + b"\n" for v in values))
        _write_json(folder / "verdict.json", verdict)
        return folder

    def record(self, entry: dict) -> None:
        """Append a window's record to windows.jsonl (a redone window appends again; the last one counts)."""
        with open(self.folder / "windows.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        return read_records(self.folder)


def read_records(folder: Path) -> list[dict]:
    """Every window's record, by window index (the last written one where a window was redone)."""
    path = Path(folder) / "windows.jsonl"
    if not path.is_file():
        return []
    by_index = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            by_index[entry["window"]] = entry
    return [by_index[k] for k in sorted(by_index)]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_plain))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _plain(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
