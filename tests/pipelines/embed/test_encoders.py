"""Item encoders: the engine-free math (text cleaning, projections, fusion, fallback) and the
real models (all-MiniLM-L6-v2 on MovieLens titles, EfficientNet-Lite0 on drawn images)."""
from __future__ import annotations

import csv
import random
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from features.item_vectors import (content_digest, fallback_vectors, fuse, l2_normalize, prepare_text,
                                   projection)
from pipelines.embed.catalog import movielens_content
from pipelines.embed.encoders import (EncoderSpec, HashFallback, ImageEncoder, ItemContent, TextEncoder,
                                load_item_encoder)

# ---- engine-free ------------------------------------------------------------------------------


def test_prepare_text_cleans_and_names_every_fix():
    assert prepare_text(None, 100) == (None, [])
    assert prepare_text("  Toy\tStory \n(1995)\x00 ", 100) == ("Toy Story (1995)", [])
    assert prepare_text(b"Am\xc3\xa9lie", 100) == ("Am\u00e9lie", [])
    text, issues = prepare_text(b"Am\xe9lie (2001)", 100)
    assert text == "Am\ufffdlie (2001)" and [r for r, _ in issues] == ["text_not_utf8"]
    text, issues = prepare_text("bad \ud800 surrogate", 100)
    assert text == "bad ? surrogate" and [r for r, _ in issues] == ["text_not_utf8"]
    assert prepare_text(" \x00\x01 \n", 100)[0] is None
    assert [r for r, _ in prepare_text(" \x00\x01 \n", 100)[1]] == ["text_empty"]
    text, issues = prepare_text("word " * 1000, 100)
    assert len(text) <= 100 and text.endswith("word") and [r for r, _ in issues] == ["text_truncated"]
    # A huge input is cut before it is cleaned, and still reported.
    text, issues = prepare_text("x" * 10_000_000, 100)
    assert len(text) == 100 and [r for r, _ in issues] == ["text_truncated"]


def test_content_digest_changes_with_each_part():
    base = content_digest("a", "img.png", "d1")
    assert base == content_digest("a", "img.png", "d1")
    assert len({base, content_digest("b", "img.png", "d1"), content_digest("a", "other.png", "d1"),
                content_digest("a", "img.png", "d2"), content_digest(None, "img.png", "d1"),
                content_digest("a", None, None), content_digest("", "img.png", "d1")}) == 7


def test_projection_is_fixed_and_keeps_text_geometry():
    p = projection(384, 384, seed=7)
    assert np.array_equal(p, projection(384, 384, seed=7))
    assert not np.allclose(p, projection(384, 384, seed=8))
    np.testing.assert_allclose(p @ p.T, np.eye(384), atol=1e-5)  # a rotation: cosines kept exactly
    down = projection(1280, 384, seed=7)
    assert down.shape == (1280, 384)
    np.testing.assert_allclose(down.T @ down, np.eye(384), atol=1e-5)  # orthonormal columns
    up = projection(64, 128, seed=1)
    np.testing.assert_allclose(up @ up.T, np.eye(64), atol=1e-5)
    x = l2_normalize(np.random.default_rng(0).standard_normal((50, 1280)).astype(np.float32))
    y = l2_normalize(x @ down)
    # A random 384-d subspace of 1280: pairwise cosines move by little (Johnson-Lindenstrauss).
    assert np.abs((x @ x.T) - (y @ y.T)).max() < 0.3


def test_fuse_weights_present_modalities_and_flags_empty_rows():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)
    pa_, pb = projection(8, 8, 1), projection(16, 8, 2)
    fused, present = fuse([(a, np.array([1, 1, 0, 0], bool), pa_, 1.0), (b, np.array([1, 0, 1, 0], bool), pb, 2.0)])
    assert present.tolist() == [True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(fused[:3], axis=1), 1, atol=1e-6)
    assert not fused[3].any()
    # Oracle: the same sums written out row by row.
    ta, tb = l2_normalize(a @ pa_), l2_normalize(b @ pb)
    np.testing.assert_allclose(fused[0], l2_normalize(ta[0] + 2 * tb[0]), atol=1e-6)
    np.testing.assert_allclose(fused[1], ta[1], atol=1e-6)
    np.testing.assert_allclose(fused[2], tb[2], atol=1e-6)


def test_fallback_is_deterministic_unit_and_spread():
    ids = np.array([1, 2, 3, 2**62 + 5, -7], dtype=np.int64)
    v = fallback_vectors(ids, 64, seed=3)
    assert np.array_equal(v, fallback_vectors(ids, 64, seed=3))
    assert not np.allclose(v, fallback_vectors(ids, 64, seed=4))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    assert np.array_equal(v[1], fallback_vectors([2], 64, 3)[0])  # a row depends on its own ID only
    off = v @ v.T - np.eye(5)
    assert np.abs(off).max() < 0.6  # random directions, not copies
    fb = HashFallback(dim=64, seed=3)
    out = fb.encode_batch([1, 2])
    assert out.ok.all() and np.array_equal(out.vectors, v[:2]) and fb.describe()["dim"] == 64


def test_spec_validation_and_fingerprint():
    assert EncoderSpec().fingerprint() == EncoderSpec().fingerprint()
    assert EncoderSpec(version="other").fingerprint() == EncoderSpec().fingerprint()  # version is the name only
    assert EncoderSpec(dim=256).fingerprint() != EncoderSpec().fingerprint()
    assert EncoderSpec(image_model="none").fingerprint() != EncoderSpec().fingerprint()
    with pytest.raises(ValueError, match="version"):
        EncoderSpec(version="../up")
    with pytest.raises(ValueError, match="text_model"):
        EncoderSpec(text_model="bert")
    with pytest.raises(ValueError, match="dim"):
        EncoderSpec(dim=0)
    names = {c["name"]: c for c in EncoderSpec().components()}
    assert names["all-MiniLM-L6-v2"]["dim"] == 384 and names["efficientnet-lite0"]["dim"] == 1280


# ---- real models ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return load_item_encoder(EncoderSpec())


def _title(t: str) -> str:
    return re.sub(r"\s*\(\d{4}\)\s*$", "", t).strip()


def test_text_vectors_carry_meaning_on_movielens(shared_data, encoder):
    """Real ml-latest-small text through the real model: (1) a sequel's title is nearer its
    original's than the same titles mismatched at random; (2) with the job's item text (title,
    genres, tags) films of the same first genre are nearer than films of different genres;
    (3) with the genre words removed (title and tags only), a film is nearer a description of
    its own genres ("a horror movie") than of the others, for most films: meaning, not shared words."""
    folder = shared_data / "ml-latest-small"
    with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
        movies = list(csv.DictReader(f))
    by_name = {_title(m["title"]).lower(): m for m in movies}
    sequels = []
    for m in movies:
        hit = re.match(r"^(.*?)\s+(2|3|4|II|III|IV|Part II)(?::.*)?$", _title(m["title"]))
        if hit and hit.group(1).lower() in by_name:
            sequels.append((by_name[hit.group(1).lower()]["title"], m["title"]))
    assert len(sequels) >= 100, "ml-latest-small should hold a hundred or more sequel pairs"
    rng = random.Random(0)
    sequels = rng.sample(sequels, 80)
    text = encoder.text
    originals = text.encode_batch([a for a, _ in sequels]).vectors
    follow_ups = text.encode_batch([b for _, b in sequels]).vectors
    sequel_cos = np.sum(originals * follow_ups, axis=1)
    random_cos = np.sum(originals * np.roll(follow_ups, 1, axis=0), axis=1)  # the same titles, mismatched
    assert sequel_cos.mean() > random_cos.mean() + 0.3, (sequel_cos.mean(), random_cos.mean())
    assert (sequel_cos > random_cos).mean() > 0.9

    content = movielens_content(folder)
    text_by_id = dict(zip(content.column("item_id").to_pylist(), content.column("text").to_pylist()))
    sample = rng.sample(movies, 400)
    genre = np.array([m["genres"].split("|")[0] for m in sample])
    same_genre = (genre[:, None] == genre[None, :]) & ~np.eye(len(sample), dtype=bool)
    v = text.encode_batch([text_by_id[m["movieId"]] for m in sample]).vectors
    cos = v @ v.T
    assert cos[same_genre].mean() > cos[genre[:, None] != genre[None, :]].mean() + 0.04

    bare = [text_by_id[m["movieId"]].replace(f"({m['genres'].replace('|', ', ')})", "") for m in sample]
    assert all(m["genres"].replace("|", ", ") not in t for m, t in zip(sample, bare))
    names = sorted({g for m in sample for g in m["genres"].split("|")} - {"(no genres listed)"})
    queries = text.encode_batch([f"a {g.lower()} movie" for g in names]).vectors
    scores = text.encode_batch(bare).vectors @ queries.T
    wins = []
    for i, m in enumerate(sample):
        own = np.isin(names, m["genres"].split("|"))
        if own.any() and not own.all():
            wins.append(scores[i, own].mean() > scores[i, ~own].mean())
    assert np.mean(wins) > 0.57, np.mean(wins)  # measured 0.63; no meaning would give ~0.5


def test_text_batch_equals_one_at_a_time_and_truncation_is_named(encoder):
    text = encoder.text
    texts = ["Toy Story (1995)", "Heat (1995) (Action, Crime, Thriller)", "a " * 400, None, "Jumanji"]
    batch = text.encode_batch(texts)
    assert batch.ok.tolist() == [True, True, True, False, True]
    assert not batch.vectors[3].any()
    for i, t in enumerate(texts):
        if t is not None:
            np.testing.assert_allclose(batch.vectors[i], text.encode_batch([t]).vectors[0], atol=2e-5)
    assert [(row, reason) for row, reason, _ in batch.issues] == [(2, "text_truncated")]
    np.testing.assert_allclose(np.linalg.norm(batch.vectors[batch.ok], axis=1), 1, atol=1e-5)
    assert TextEncoder.dim == batch.vectors.shape[1] == 384


def _scene(path, color, shift=0, size=(320, 240), shape="circle"):
    img = Image.new("RGB", size, (245, 245, 240))
    d = ImageDraw.Draw(img)
    box = (80 + shift, 50 + shift, 240 + shift, 190 + shift)
    if shape == "circle":
        d.ellipse(box, fill=color)
    else:
        for x in range(0, size[0], 24):
            d.rectangle((x, 0, x + 11, size[1]), fill=color)
    img.save(path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = {
        "red_circle": _scene(folder / "red_circle.png", (210, 30, 30)),
        "red_circle_moved": _scene(folder / "red_circle_moved.jpg", (200, 40, 35), shift=12, size=(400, 300)),
        "blue_stripes": _scene(folder / "blue_stripes.png", (30, 60, 200), shape="stripes"),
        "green_stripes": _scene(folder / "green_stripes.png", (40, 170, 60), shape="stripes"),
    }
    Image.new("L", (50, 700), 128).save(folder / "tall_gray.bmp")  # odd aspect, one channel
    paths["tall_gray"] = str(folder / "tall_gray.bmp")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    good = (folder / "red_circle.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "a_folder.png").mkdir()
    paths.update(corrupt=str(folder / "corrupt.jpg"), truncated=str(folder / "truncated.png"),
                 empty=str(folder / "empty.png"), folder=str(folder / "a_folder.png"),
                 missing=str(folder / "nope.png"))
    return paths


def test_image_vectors_group_similar_drawings(encoder, images):
    image = encoder.image
    names = ["red_circle", "red_circle_moved", "blue_stripes", "green_stripes", "tall_gray"]
    out = image.encode_batch([images[n] for n in names])
    assert out.ok.all() and out.issues == [] and out.vectors.shape == (5, ImageEncoder.dim)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    cos = out.vectors @ out.vectors.T
    # The same scene moved and recoloured slightly is nearer than a different pattern.
    assert cos[0, 1] > cos[0, 2] and cos[0, 1] > cos[0, 3]
    assert cos[2, 3] > cos[2, 0] and cos[2, 3] > cos[2, 1]  # stripes near stripes
    for i, n in enumerate(names):  # batching changes nothing
        np.testing.assert_allclose(out.vectors[i], image.encode_batch([images[n]]).vectors[0], atol=1e-4)


def test_bad_image_files_are_named_rejections_never_exceptions(encoder, images):
    names = ["corrupt", "truncated", "empty", "folder", "missing", "red_circle"]
    out = encoder.image.encode_batch([images[n] for n in names] + [None])
    assert out.ok.tolist() == [False] * 5 + [True, False]
    assert {row: reason for row, reason, _ in out.issues} == {
        0: "image_corrupt", 1: "image_corrupt", 2: "image_corrupt", 3: "image_unreadable", 4: "image_missing"}
    assert not out.vectors[~out.ok].any()
    small = ImageEncoder(encoder.image.net, max_pixels=1000)
    assert [r for _, r, _ in small.encode_batch([images["red_circle"]]).issues] == ["image_too_large"]
    small = ImageEncoder(encoder.image.net, max_bytes=10)
    assert [r for _, r, _ in small.encode_batch([images["red_circle"]]).issues] == ["image_too_large"]


def test_fused_item_vectors(encoder, images):
    items = [ItemContent(1, "Toy Story (1995)", images["red_circle"]),
             ItemContent(2, "Toy Story (1995)", None),
             ItemContent(3, None, images["red_circle"]),
             ItemContent(4, None, images["corrupt"]),
             ItemContent(5, None, None),
             ItemContent(6, "Heat (1995)", images["missing"])]
    out = encoder.encode_batch(items)
    assert out.modalities == ["text+image", "text", "image", "fallback", "fallback", "text"]
    assert [(row, reason) for row, reason, _ in out.issues] == [(3, "image_corrupt"), (5, "image_missing")]
    v = out.vectors
    assert v.shape == (6, EncoderSpec().dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    # Both modalities with equal weights: the fused vector is the normalized sum of the two alone.
    np.testing.assert_allclose(v[0], l2_normalize(v[1] + v[2]), atol=1e-5)
    # Text alone is a rotation of the model's vector: text-to-text cosines are the model's.
    t = encoder.text.encode_batch(["Toy Story (1995)", "Heat (1995)"]).vectors
    assert abs(float(v[1] @ v[5]) - float(t[0] @ t[1])) < 1e-5
    # Fallback rows are the deterministic hash vectors of their IDs.
    np.testing.assert_allclose(v[3:5], fallback_vectors([4, 5], EncoderSpec().dim, EncoderSpec().seed), atol=1e-6)
    assert load_item_encoder(EncoderSpec()) is encoder  # loaded once per process
