"""Encoding speed: items/s for text and image encoding, batched vs one at a time (same run,
same inputs, models warmed up first), and the share of a backfill + embed run spent encoding.

    .venv/bin/python bench/embed_bench.py [--texts 384] [--images 96] [--users 200]

Text inputs are ml-latest-small item texts (title, genres, tags) when ../shared/data is
present, else the synthetic catalog's; images are drawn here (PIL: shapes on colours,
320x240 PNG and JPEG). The backfill part runs the backfill (pipelines/batch/backfill.py, local engine) on a
synthetic run, then the Beam embedding job (pipelines/embed/job.py) on that run's catalog, and
reports encode time / (backfill + embed wall time).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def texts(n: int) -> tuple[list[str], str]:
    data = REPO.parent / "shared" / "data" / "ml-latest-small"
    if data.is_dir():
        from pipelines.embed.catalog import movielens_content

        got = movielens_content(data).column("text").to_pylist()
        source = "ml-latest-small titles + genres + tags"
    else:
        from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

        got = SyntheticStream(SyntheticConfig()).catalog().column("text").to_pylist()
        source = "synthetic catalog texts"
    random.Random(0).shuffle(got)
    return (got * (n // len(got) + 1))[:n], source


def images(folder: Path, n: int) -> list[str]:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    paths = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(img)
        for _ in range(4):
            x, y = rng.randrange(280), rng.randrange(200)
            box = (x, y, x + rng.randrange(20, 120), y + rng.randrange(20, 120))
            color = tuple(rng.randrange(256) for _ in range(3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=color)
        path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        img.save(path)
        paths.append(str(path))
    return paths


def time_encoder(encode, inputs: list, batch_size: int) -> dict:
    """The same inputs, in batches and then one at a time, after a warm-up."""
    encode(inputs[:batch_size])  # warm-up: first-call allocations, lazy init
    start = time.perf_counter()
    for i in range(0, len(inputs), batch_size):
        encode(inputs[i:i + batch_size])
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for x in inputs:
        encode([x])
    one = time.perf_counter() - start
    b, s = _rate(len(inputs), batched), _rate(len(inputs), one)
    return {"batched_items_per_s": round(b, 1), "single_items_per_s": round(s, 1), "speedup": round(b / s, 2),
            "batch_size": batch_size, "items": len(inputs)}


def backfill_share(work: Path, users: int, days: int, items: int) -> dict:
    from pipelines.batch.backfill import BackfillConfig, run_backfill
    from pipelines.embed.job import EmbedConfig, run_embed
    from pipelines.embed.encoders import EncoderSpec
    from pipelines.sources.ingest import ingest
    from pipelines.sources.synthetic import SyntheticConfig

    synthetic = SyntheticConfig(users=users, days=days, items=items)
    ingest("synthetic", None, synthetic, work, stream_fraction=0.0)
    start = time.perf_counter()
    counts = run_backfill(BackfillConfig(input=str(work / "raw" / "backfill" / "*.jsonl"),
                                         output=str(work / "offline"), catalog=str(work / "catalog.parquet")))
    backfill_s = time.perf_counter() - start
    start = time.perf_counter()
    embedded = run_embed(EmbedConfig(workdir=str(work), encoder=EncoderSpec(), batch_size=64))
    embed_s = time.perf_counter() - start
    total = backfill_s + embed_s
    return {"events": counts["read"], "catalog_items": embedded["items"], "backfill_s": round(backfill_s, 2),
            "embed_job_s": round(embed_s, 2), "encode_s": round(embedded["encode_seconds"], 2),
            "encode_share_of_embed_job": round(embedded["encode_seconds"] / embed_s, 3),
            "encode_share_of_backfill_plus_embed": round(embedded["encode_seconds"] / total, 3)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=384)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-batch-size", type=int, default=32)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from pipelines.embed.encoders import EncoderSpec, load_item_encoder

    start = time.perf_counter()
    encoder = load_item_encoder(EncoderSpec())
    load_s = time.perf_counter() - start
    result: dict = {"torch_threads": torch.get_num_threads(), "model_load_s": round(load_s, 2)}
    inputs, source = texts(args.texts)
    result["text"] = {"source": source, **time_encoder(encoder.text.encode_batch, inputs, args.batch_size)}
    print(f"text  ({source}): batched {result['text']['batched_items_per_s']:.1f} items/s, one at a time "
          f"{result['text']['single_items_per_s']:.1f} items/s, x{result['text']['speedup']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = images(Path(tmp), args.images)
        result["image"] = time_encoder(encoder.image.encode_batch, paths, args.image_batch_size)
        print(f"image (drawn 320x240): batched {result['image']['batched_items_per_s']:.1f} items/s, one at a time "
              f"{result['image']['single_items_per_s']:.1f} items/s, x{result['image']['speedup']}", flush=True)
        result["backfill"] = backfill_share(Path(tmp) / "run", args.users, args.days, args.items)
    b = result["backfill"]
    print(f"backfill {b['backfill_s']} s ({b['events']:,} events) + embed job {b['embed_job_s']} s "
          f"({b['catalog_items']:,} items, encoding {b['encode_s']} s): encoding is "
          f"{100 * b['encode_share_of_backfill_plus_embed']:.0f}% of backfill + embed, "
          f"{100 * b['encode_share_of_embed_job']:.0f}% of the embed job")
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
