"""The local engine (`recstream backfill`'s default): its flags, its errors from inside a worker
thread, and its progress bars. That it writes what Beam writes is tested in test_backfill.py (both
engines held to the oracles) and test_backfill_parquet.py (both engines' tables equal)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import NOW_MS
from tests.terminal import on_terminal

from features.errors import ConfigError
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.cli import main
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.engine


def raw(folder: Path, files: int = 3) -> Path:
    """Synthetic JSON lines in ``files`` files."""
    lines = [x for window, _ in SyntheticStream(SyntheticConfig(users=40, days=2, seed=3)).windows() for x in window]
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"part-{i}.jsonl").write_text("\n".join(lines[i::files]) + "\n")
    return folder


def backfill_cmd(inputs: str, out: Path, *more: str) -> list[str]:
    return [str(Path(sys.executable).parent / "recstream"), "backfill", "--input", inputs, "--output", str(out),
            "--stats-as-of", str(NOW_MS), *more]


def test_beam_options_and_bad_workers_are_one_line_errors(tmp_path, capsys):
    events = raw(tmp_path / "raw")
    args = ["backfill", "--input", str(events / "*.jsonl"), "--output", str(tmp_path / "out")]
    assert main([*args, "--runner=DirectRunner"]) == 2
    assert capsys.readouterr().err == (
        "recstream backfill: error: unrecognized arguments: --runner=DirectRunner (the local engine takes none; "
        "Beam's options need --engine beam)\n")
    assert main([*args, "--engine", "beam", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers: sets the local engine's threads" in err
    assert main([*args, "--workers", "0"]) == 2
    assert capsys.readouterr().err == "recstream backfill: error: --workers: must be >= 1, got 0\n"
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        run_backfill(BackfillConfig(input=str(events / "*.jsonl"), output=str(tmp_path / "out")), engine="spark")
    with pytest.raises(ConfigError, match="--workers: sets the local engine's threads"):
        run_backfill(BackfillConfig(input=str(events / "*.jsonl"), output=str(tmp_path / "out")), engine="beam",
                     workers=2)
    assert not (tmp_path / "out").exists()


def test_an_error_in_a_worker_stops_the_run_in_one_line_and_keeps_the_last_run(tmp_path, capsys, monkeypatch):
    """A Parquet page that cannot be read surfaces while a worker thread reads it: the run stops with
    the file named, and the previous run's tables stay whole."""
    events = raw(tmp_path / "raw")
    out = tmp_path / "out"
    first = run_backfill(BackfillConfig(input=str(events / "*.jsonl"), output=str(out), now_ms=NOW_MS), workers=2)
    table = pa.Table.from_pylist([json.loads(x) for x in (events / "part-0.jsonl").read_text().splitlines()])
    pq.write_table(table, events / "bad.parquet", row_group_size=50)

    real = pq.ParquetFile.iter_batches

    def corrupt_after_one(self, *args, **kwargs):  # the first batch reads, the next page is corrupt
        batches = real(self, *args, **kwargs)
        yield next(batches)
        raise pa.ArrowInvalid("Corrupt page:\n\tbad header\r\n")
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", corrupt_after_one)
    code = main(["backfill", "--input", f"{events}/*.jsonl,{events}/*.parquet", "--output", str(out),
                 "--workers", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"recstream backfill: error: {events}/bad.parquet: cannot be read (Corrupt page: bad header); "
                   "rewrite the file\n")
    assert json.loads((out / "counts.json").read_text()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # nothing staged is left behind


def test_one_worker_and_many_write_the_same_tables_row_for_row(tmp_path):
    """Not only the same rows: the same order in every part, whatever order the tasks finish in
    (a seeded shuffle of the training rows depends on it)."""
    events = raw(tmp_path / "raw", files=5)
    tables = {}
    for workers in (1, 4):
        out = tmp_path / f"out{workers}"
        counts = run_backfill(BackfillConfig(input=str(events / "*.jsonl"), output=str(out), now_ms=NOW_MS,
                                             stats_as_of_ms=NOW_MS, shards=7), workers=workers)
        parts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
        tables[workers] = counts, parts, {part: pq.read_table(out / part).to_pylist() for part in parts}
    assert tables[1] == tables[4]
    assert "item_stats/part-00006.parquet" in tables[1][1]  # every shard had work


def test_a_progress_bar_per_stage_on_a_terminal_and_none_elsewhere(tmp_path):
    events = raw(tmp_path / "raw")
    code, frames = on_terminal(backfill_cmd(str(events / "*.jsonl"), tmp_path / "a", "--workers", "2"))
    assert code == 0
    for stage in ("read files", "user shards", "item shards"):  # each stage's bar reaches its end
        assert any(re.match(rf"backfill: {stage}: 100%\|.*\| (\d+)/\1 ", f) for f in frames), frames
    assert any(f.startswith("backfill: read files: 100%") and "| 3/3 " in f for f in frames)  # a task per file
    piped = subprocess.run(backfill_cmd(str(events / "*.jsonl"), tmp_path / "b"), capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert piped.returncode == 0 and b"%|" not in piped.stderr


def test_compressed_json_lines_give_the_tables_of_plain_ones(tmp_path):
    """Compressed by the extension Beam names them by: gzip, bzip2, xz and zstd (through Beam's
    filesystem), mixed with a plain file."""
    import bz2
    import gzip
    import lzma

    import zstandard

    events = raw(tmp_path / "plain", files=5)
    packed = tmp_path / "packed"
    packed.mkdir()
    writers = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".zst": lambda data: zstandard.ZstdCompressor().compress(data), "": lambda data: data}
    for (suffix, compress), path in zip(writers.items(), sorted(events.glob("*.jsonl"))):
        (packed / (path.name + suffix)).write_bytes(compress(path.read_bytes()))
    out = {}
    for name, folder in (("plain", events), ("packed", packed)):
        counts = run_backfill(BackfillConfig(input=str(folder / "*"), output=str(tmp_path / f"out-{name}"),
                                             now_ms=NOW_MS, stats_as_of_ms=NOW_MS))
        out[name] = counts, {t: sorted(map(repr, pq.read_table(tmp_path / f"out-{name}" / t).to_pylist()))
                             for t in ("event_log", "user_sequence", "item_stats")}
    assert out["packed"] == out["plain"]
    assert out["plain"][0]["rejected_total"] == 0 and out["plain"][0]["accepted"] > 1000
