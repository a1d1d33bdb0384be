"""Typed configs reject typos and bad values by name; the CLI turns them into exit code 2."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from features.sequence import SequencePolicy
from pipelines.cli import main
from pipelines.config import ConfigError, from_dict, load_toml, to_dict
from pipelines.sources.synthetic import SyntheticConfig


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sequence: SequencePolicy = field(default_factory=SequencePolicy)


def test_nested_values_load():
    cfg = from_dict(Outer, {"synthetic": {"users": 7}, "sequence": {"max_len": 9, "event_types": ["click"]}})
    assert cfg.synthetic.users == 7 and cfg.sequence.max_len == 9
    assert cfg.sequence.event_types == frozenset({"click"})
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"synthetic: unknown key\(s\) \['userz'\]"):
        from_dict(Outer, {"synthetic": {"userz": 7}})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="sequence: .*max_len must be >= 1"):
        from_dict(Outer, {"sequence": {"max_len": 0}})
    with pytest.raises(ConfigError, match="unknown types"):
        from_dict(Outer, {"sequence": {"event_types": ["teleport"]}})


def test_demo_cli_rejects_a_config_typo(tmp_path, capsys):
    bad = tmp_path / "demo.toml"
    bad.write_text('workdir = "x"\n[train]\nstepz = 3\n')
    assert main(["demo", "--config", str(bad)]) == 2
    assert "train: unknown key(s) ['stepz']" in capsys.readouterr().err


def test_toml_file_loads(tmp_path):
    good = tmp_path / "outer.toml"
    good.write_text('name = "y"\n[synthetic]\nusers = 3\n')
    assert load_toml(Outer, good) == Outer(name="y", synthetic=SyntheticConfig(users=3))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_toml(Outer, tmp_path / "missing.toml")


def test_cli_reports_missing_input(tmp_path, capsys):
    code = main(["backfill", "--input", str(tmp_path / "none-*.jsonl"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "no raw event files match" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["demo", "--workdir", "{file}"],
    ["ingest", "--dataset", "synthetic", "--workdir", "{file}"],
    ["backfill", "--input", "{raw}", "--output", "{file}"],
    ["materialize", "--workdir", "{file}"],
    ["train", "--workdir", "{file}", "--model", "din"],
    ["stream", "--config", "{toml}"],
    ["retrain", "--config", "{toml}"],
])
def test_a_file_where_a_folder_goes_is_refused_before_any_work(argv, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("a user's file\n")
    raw = tmp_path / "events-1.jsonl"
    raw.write_text("{}\n")
    toml = tmp_path / "job.toml"
    toml.write_text(f'workdir = "{file}"\nsource = "{tmp_path}"\n' if argv[0] == "stream" else f'workdir = "{file}"\n')
    code = main([a.format(file=file, raw=raw, toml=toml) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and f"{file} is a file, not a folder" in err and len(err.strip().splitlines()) == 1, err
    toml.write_text(toml.read_text().replace(str(file), str(file / "run")))
    code = main([a.format(file=file / "run", raw=raw, toml=toml) for a in argv])  # a folder inside a file
    err = capsys.readouterr().err
    assert code == 2 and f"{file / 'run'} would be inside {file}, which is a file" in err, err
    assert file.read_text() == "a user's file\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "events-1.jsonl", "job.toml", "taken"]


def test_backfill_inputs_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "raw.jsonl").mkdir()
    out = tmp_path / "out"
    assert main(["backfill", "--input", str(tmp_path / "*.jsonl"), "--output", str(out)]) == 2
    assert "raw.jsonl: --input matches this folder; give its files" in capsys.readouterr().err
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    assert main(["backfill", "--input", str(events), "--output", str(out), "--labels", "next_item",
                 "--catalog", str(tmp_path / "nope.parquet")]) == 2
    assert "nope.parquet: is missing; give the item catalog's Parquet file" in capsys.readouterr().err
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": ["a", "b"]}), tmp_path / "raw_ids.parquet")  # raw IDs, not hashed
    assert main(["backfill", "--input", str(events), "--output", str(out), "--labels", "next_item",
                 "--catalog", str(tmp_path / "raw_ids.parquet")]) == 2
    err = capsys.readouterr().err
    assert "raw_ids.parquet: item_id must be hashed IDs (int64, no nulls), got string" in err and len(
        err.strip().splitlines()) == 1, err
    assert not out.exists()
