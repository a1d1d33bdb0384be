"""The Beam embedding job on small catalogs with real encoders: every row accounted for, bad
input named and given fallback vectors, incremental re-runs, versions side by side, and the
vectors in Feast online and offline equal to the Parquet rows."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from features.ids import stable_id
from features.item_vectors import (EmbeddingVersionMismatch, content_digest, fallback_vectors, latest_rows,
                                   serving_version, version_dir)
from pipelines.cli import main
from pipelines.embed.catalog import movielens_content, write_content_catalog
from pipelines.embed.job import EmbedConfig, EmbedError, run_embed
from pipelines.embed.encoders import EncoderSpec, ItemContent, load_item_encoder
from pipelines.store.feature_store import apply, materialize_item_vectors, open_store, read_item_vectors

pytestmark = pytest.mark.engine
NOW_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SPEC = EncoderSpec()


def _image(path, color, shape="circle"):
    img = Image.new("RGB", (160, 120), (250, 250, 250))
    d = ImageDraw.Draw(img)
    if shape == "circle":
        d.ellipse((30, 20, 130, 100), fill=color)
    else:
        d.rectangle((20, 20, 140, 60), fill=color)
    img.save(path)


def make_catalog(work):
    """Rows: good text, good images, every kind of bad input, duplicate rows."""
    (work / "img").mkdir(parents=True)
    _image(work / "img" / "red.png", (220, 20, 20))
    _image(work / "img" / "blue.jpg", (20, 40, 220), shape="box")
    (work / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    rows = [
        (1, "Toy Story (1995) (Adventure, Animation, Children, Comedy, Fantasy)".encode(), "img/red.png"),
        (2, "Heat (1995) (Action, Crime, Thriller)".encode(), None),
        (3, None, "img/blue.jpg"),  # image only
        (4, b"Am\xe9lie (2001) (Comedy, Romance)", None),  # not UTF-8: repaired
        (5, b"   ", None),  # blank text, no image: fallback
        (6, None, None),  # no content: fallback
        (7, b"Jumanji (1995)", "img/missing.png"),  # missing image: text only
        (8, None, "img/corrupt.jpg"),  # corrupt image, no text: fallback
        (9, ("Epic saga " * 3000).encode(), None),  # very long: truncated
        (2, "Heat (1995) (Action, Crime, Thriller)".encode(), None),  # an exact duplicate row
        (10, b"Version A", None),
        (10, b"Version B", None),  # a conflicting duplicate
        (None, b"orphan row", None),  # no item_id: dropped
    ]
    table = pa.table({"item_id": pa.array([r[0] for r in rows], pa.int64()),
                      "text": pa.array([r[1] for r in rows], pa.binary()),
                      "image_ref": pa.array([r[2] for r in rows], pa.string())})
    pq.write_table(table, work / "catalog.parquet")
    return table


def folder_digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def vectors_of(work, version):
    table = latest_rows(pq.read_table(version_dir(work / "offline", version)))
    return {r["item_id"]: r for r in table.to_pylist()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("embed")
    make_catalog(work)
    counts = run_embed(EmbedConfig(workdir=str(work), encoder=SPEC, batch_size=4, now_ms=NOW_MS))
    return work, counts


def test_first_run_accounts_for_every_row(run):
    work, counts = run
    assert counts["catalog_rows"] == 13
    assert counts["items"] == 10 and counts["embedded"] == 10
    assert counts["duplicates"] == 2 and counts["duplicate_conflicts"] == 1
    assert counts["skipped_unchanged"] == 0
    assert counts["rejected"] == {"missing_item_id": 1, "text_empty": 1, "no_content": 1, "image_missing": 1,
                                  "image_corrupt": 1}
    assert counts["repaired"] == {"text_not_utf8": 1, "text_truncated": 1}
    assert counts["modalities"] == {"text+image": 1, "text": 5, "image": 1, "fallback": 3}
    assert counts["serving_version"] == SPEC.version == serving_version(work / "offline")
    assert json.loads((work / "offline" / "item_embeddings" / "_counts.json").read_text())["embedded"] == 10
    issues = pq.read_table(work / "offline" / "item_embeddings" / "_rejected" / f"version={SPEC.version}").to_pylist()
    assert sorted((r["item_id"] or 0, r["reason"], r["action"]) for r in issues) == [
        (0, "missing_item_id", "dropped"), (4, "text_not_utf8", "repaired"), (5, "text_empty", "fallback"),
        (6, "no_content", "fallback"), (7, "image_missing", "modality_dropped"), (8, "image_corrupt", "fallback"),
        (9, "text_truncated", "repaired")]
    assert next(r for r in issues if r["reason"] == "missing_item_id")["raw"].count("orphan row") == 1


def test_vectors_equal_the_encoder_called_directly(run):
    work, _ = run
    rows = vectors_of(work, SPEC.version)
    assert sorted(rows) == list(range(1, 11))
    assert {r["modalities"] for r in rows.values()} == {"text+image", "text", "image", "fallback"}
    assert all(r["encoder_version"] == SPEC.version for r in rows.values())
    assert all(r["embedded_ts"] == datetime.fromtimestamp(NOW_MS / 1000, timezone.utc) for r in rows.values())
    # An item's first content held all along: point-in-time reads inside the data's range find it.
    assert all(r["valid_from_ts"] == datetime(1990, 1, 1, tzinfo=timezone.utc) for r in rows.values())
    encoder = load_item_encoder(SPEC)
    img = str(work / "img")
    direct = encoder.encode_batch([
        ItemContent(1, "Toy Story (1995) (Adventure, Animation, Children, Comedy, Fantasy)", f"{img}/red.png"),
        ItemContent(2, "Heat (1995) (Action, Crime, Thriller)", None),
        ItemContent(3, None, f"{img}/blue.jpg"),
        ItemContent(4, "Am\ufffdlie (2001) (Comedy, Romance)", None),
        ItemContent(7, "Jumanji (1995)", f"{img}/missing.png"),
        # Conflicting duplicates: the copy with the greater content digest, the same choice on every run.
        ItemContent(10, max(("Version A", "Version B"), key=lambda t: content_digest(t, None, None)), None)])
    for vec, item in zip(direct.vectors, (1, 2, 3, 4, 7, 10)):
        np.testing.assert_allclose(np.array(rows[item]["vector"], np.float32), vec, atol=1e-4)
    for item in (5, 6, 8):
        assert rows[item]["modalities"] == "fallback"
        np.testing.assert_allclose(rows[item]["vector"], fallback_vectors([item], SPEC.dim, SPEC.seed)[0], atol=1e-6)
    assert len(rows[9]["vector"]) == SPEC.dim and rows[9]["modalities"] == "text"


def test_rerun_embeds_nothing_and_touches_nothing(run):
    work, _ = run
    before = folder_digest(version_dir(work / "offline", SPEC.version))
    counts = run_embed(EmbedConfig(workdir=str(work), encoder=SPEC, batch_size=4, now_ms=NOW_MS + 1000))
    assert counts["embedded"] == 0 and counts["skipped_unchanged"] == 10 and counts["items"] == 10
    assert counts["modalities"] == {} and counts["rejected"] == {"missing_item_id": 1}
    assert folder_digest(version_dir(work / "offline", SPEC.version)) == before


def test_changed_and_new_items_are_embedded_beside_the_old_files(run, tmp_path):
    work, _ = run
    before = folder_digest(version_dir(work / "offline", SPEC.version))
    catalog = pq.read_table(work / "catalog.parquet").to_pylist()
    for row in catalog:
        if row["item_id"] == 2:
            row["text"] = b"Heat (1995) (Action, Crime, Drama)"
    catalog.append({"item_id": 11, "text": b"Sabrina (1995)", "image_ref": None})
    pq.write_table(pa.Table.from_pylist(catalog, schema=pq.read_schema(work / "catalog.parquet")),
                   tmp_path / "catalog.parquet")
    counts = run_embed(EmbedConfig(workdir=str(work), catalog=str(tmp_path / "catalog.parquet"),
                                   image_root=str(work), encoder=SPEC, batch_size=4, now_ms=NOW_MS + 2000))
    assert counts["embedded"] == 2 and counts["skipped_unchanged"] == 9
    after = folder_digest(version_dir(work / "offline", SPEC.version))
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    rows = vectors_of(work, SPEC.version)
    direct = load_item_encoder(SPEC).encode_batch([ItemContent(2, "Heat (1995) (Action, Crime, Drama)", None)])
    np.testing.assert_allclose(rows[2]["vector"], direct.vectors[0], atol=1e-4)
    assert rows[11]["modalities"] == "text"
    # Changed content is valid from the run that saw it; a new item's first content, all along.
    assert rows[2]["valid_from_ts"] == datetime.fromtimestamp((NOW_MS + 2000) / 1000, timezone.utc)
    assert rows[11]["valid_from_ts"] == datetime(1990, 1, 1, tzinfo=timezone.utc)
    # The catalog of the fixture again: item 2 changes back and is embedded again; 11 keeps its vector.
    counts = run_embed(EmbedConfig(workdir=str(work), encoder=SPEC, batch_size=4, now_ms=NOW_MS + 3000))
    assert counts["embedded"] == 1 and counts["skipped_unchanged"] == 9


def test_new_version_embeds_all_and_leaves_the_serving_one_alone(run):
    work, _ = run
    v1 = folder_digest(version_dir(work / "offline", SPEC.version))
    v2 = EncoderSpec(version="mm-v2", dim=128)
    counts = run_embed(EmbedConfig(workdir=str(work), encoder=v2, batch_size=4, now_ms=NOW_MS + 5000))
    assert counts["embedded"] == 10 and counts["skipped_unchanged"] == 0
    assert counts["serving_version"] == SPEC.version  # not asked to serve: the old version keeps serving
    assert folder_digest(version_dir(work / "offline", SPEC.version)) == v1
    rows = vectors_of(work, "mm-v2")
    assert sorted(rows) == list(range(1, 11))
    assert all(len(r["vector"]) == 128 and r["encoder_version"] == "mm-v2" for r in rows.values())
    # A version name stays bound to its spec.
    with pytest.raises(EmbedError, match="fingerprint"):
        run_embed(EmbedConfig(workdir=str(work), encoder=EncoderSpec(version="mm-v2", dim=64)))
    assert folder_digest(version_dir(work / "offline", SPEC.version)) == v1


def test_feast_online_and_offline_vectors_equal_the_parquet_rows(run):
    work, _ = run
    store = open_store(work)
    apply(store, work)
    parquet = vectors_of(work, SPEC.version)
    assert materialize_item_vectors(store, work) >= len(parquet)
    online = read_item_vectors(store, list(parquet) + [12345], expected_version=SPEC.version)
    assert online[12345] is None
    for item, row in parquet.items():
        got = online[item]
        assert got["encoder_version"] == SPEC.version and got["modalities"] == row["modalities"]
        assert np.array_equal(np.array(got["vector"], np.float32), np.array(row["vector"], np.float32))
    with pytest.raises(EmbeddingVersionMismatch, match="'mm-v0'.*'mm-v1'"):
        read_item_vectors(store, [1], expected_version="mm-v0")
    entity_df = pd.DataFrame({"item_id": list(parquet), "event_timestamp": pd.Timestamp("2030-01-01", tz="UTC")})
    offline = store.get_historical_features(entity_df=entity_df, features=[
        "item_content:vector", "item_content:encoder_version"]).to_df()
    assert len(offline) == len(parquet)
    for item, vector, version in zip(offline["item_id"], offline["vector"], offline["encoder_version"]):
        assert version == SPEC.version
        assert np.array_equal(np.asarray(vector, np.float32), np.array(parquet[item]["vector"], np.float32))

    # Inside the data's range (before any embedding run) the vectors are there, and a content
    # change shows from the run that embedded it: item 2 changed at NOW+2 s and back at NOW+3 s.
    history = pq.read_table(version_dir(work / "offline", SPEC.version)).to_pylist()
    item2 = [r["vector"] for r in sorted((r for r in history if r["item_id"] == 2), key=lambda r: r["embedded_ts"])]
    year_before = NOW_MS - 365 * 86_400_000
    inside = pd.DataFrame({"item_id": [1, 2, 2], "event_timestamp": pd.to_datetime(
        [year_before, year_before, NOW_MS + 2500], unit="ms", utc=True)})
    got = store.get_historical_features(entity_df=inside, features=["item_content:vector"]).to_df()
    got = got.sort_values(["item_id", "event_timestamp"]).reset_index(drop=True)
    for i, want in enumerate([parquet[1]["vector"], item2[0], item2[1]]):
        assert np.array_equal(np.asarray(got["vector"][i], np.float32), np.array(want, np.float32)), i
    assert not np.array_equal(np.asarray(item2[0], np.float32), np.asarray(item2[1], np.float32))

    # Promote another version: apply re-points the view, materialize serves the new vectors.
    v3 = EncoderSpec(version="mm-v3", image_model="none")
    counts = run_embed(EmbedConfig(workdir=str(work), encoder=v3, batch_size=8, serve=True, now_ms=NOW_MS + 9000))
    # Text only: the image-only items (3, 8) fall back, each with a named reason.
    assert counts["modalities"]["fallback"] == 4 and counts["rejected"]["no_content"] == 3
    assert serving_version(work / "offline") == "mm-v3"
    apply(store, work)
    materialize_item_vectors(store, work)
    new = vectors_of(work, "mm-v3")
    online = read_item_vectors(store, [1, 2, 3], expected_version="mm-v3")
    assert online[3]["modalities"] == "fallback"  # text-only encoder: the image-only item falls back
    assert np.array_equal(np.array(online[1]["vector"], np.float32), np.array(new[1]["vector"], np.float32))
    # Item 2's mm-v1 row online was newer (its content changed at NOW+3 s) than mm-v3's first
    # vector (valid since 1990): a new serving version still replaces it.
    assert np.array_equal(np.array(online[2]["vector"], np.float32), np.array(new[2]["vector"], np.float32))


def test_empty_and_missing_catalogs(tmp_path):
    pq.write_table(pa.table({"item_id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}),
                   tmp_path / "catalog.parquet")
    counts = run_embed(EmbedConfig(workdir=str(tmp_path), encoder=EncoderSpec(image_model="none")))
    assert counts["embedded"] == 0 and counts["catalog_rows"] == 0
    assert pq.read_table(version_dir(tmp_path / "offline", "mm-v1")).num_rows == 0
    with pytest.raises(FileNotFoundError, match="no item catalog"):
        run_embed(EmbedConfig(workdir=str(tmp_path / "nowhere")))


def test_movielens_slice_through_the_job(shared_data, tmp_path):
    content = movielens_content(shared_data / "ml-latest-small").slice(0, 120)
    assert "tags: " in content.column("text")[0].as_py()  # Toy Story has users' tags
    write_content_catalog(content, tmp_path / "catalog.parquet")
    counts = run_embed(EmbedConfig(workdir=str(tmp_path), encoder=EncoderSpec(image_model="none"), batch_size=32))
    assert counts["embedded"] == 120 and counts["rejected_total"] == 0 and counts["modalities"] == {"text": 120}
    rows = vectors_of(tmp_path, "mm-v1")
    assert set(rows) == set(stable_id(m) for m in content.column("item_id").to_pylist())
    vectors = np.array([r["vector"] for r in rows.values()], np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_cli_embeds_the_synthetic_catalog_into_feast(tmp_path, capsys):
    code = main(["embed", "--workdir", str(tmp_path), "--dataset", "synthetic", "--synthetic", '{"items": 40}',
                 "--version", "syn-v1", "--batch-size", "16"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("embed: 40 catalog items: 40 embedded (text 40), 0 unchanged") and "version syn-v1" in out[0]
    assert out[1] == "  40 item vectors online"
    counts = json.loads((tmp_path / "offline" / "item_embeddings" / "_counts.json").read_text())
    assert counts["embedded"] == 40 and counts["version"] == "syn-v1" and counts["modalities"] == {"text": 40}
    online = read_item_vectors(open_store(tmp_path), [stable_id(0), stable_id(39)], expected_version="syn-v1")
    assert all(v is not None and len(v["vector"]) == EncoderSpec().dim for v in online.values())
    assert main(["embed", "--workdir", str(tmp_path / "none"), "--no-materialize"]) == 2  # no catalog: a clear error


def test_feast_apply_from_the_feature_repo_registers_item_content(run, tmp_path):
    work, _ = run
    repo = Path(__file__).resolve().parents[3]
    shutil.copytree(repo / "feature_repo", tmp_path / "feature_repo")
    demo = tmp_path / "runs" / "demo"  # where feature_store.yaml keeps the registry, relative to feature_repo/
    shutil.copytree(work / "offline", demo / "offline")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    feast = Path(sys.executable).with_name("feast")
    for args in (["apply"], ["feature-views", "describe", "item_content"]):
        done = subprocess.run([str(feast), *args], cwd=tmp_path / "feature_repo", env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    serving = serving_version(work / "offline")
    assert "item_content" in done.stdout and f"version={serving}" in done.stdout
