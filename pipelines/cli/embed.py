"""`recstream embed`: the Beam embedding job over an item catalog, then Feast."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipelines.cli import flags


def add(sub) -> None:
    e = sub.add_parser("embed", help="Beam job: item catalog -> versioned multimodal item vectors -> Feast; "
                                     "unknown flags go to Beam's PipelineOptions")
    e.add_argument("--workdir", required=True, help="run folder (vectors go to WORKDIR/offline/item_embeddings)")
    e.add_argument("--catalog", help="Parquet catalog: item_id (hashed), text, image_ref, valid_from (ms, optional) "
                                     "(default WORKDIR/catalog.parquet)")
    e.add_argument("--dataset", help="build the catalog from a dataset instead: synthetic | ml-latest-small | "
                                     "ml-1m | ml-100k (MovieLens: titles, genres and tags)")
    e.add_argument("--path", help="the dataset's folder")
    e.add_argument("--synthetic", help="SyntheticConfig as JSON, with --dataset synthetic")
    e.add_argument("--image-root", help="folder that relative image_ref paths are under (default: the catalog's)")
    e.add_argument("--version", help="encoder version to embed into (default: EncoderSpec's)")
    e.add_argument("--encoder", help='EncoderSpec as JSON, e.g. \'{"version": "mm-v2", "dim": 256}\'')
    e.add_argument("--no-image", action="store_true", help="text only (image_model none)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="cpu", help="torch device for the encoders (cpu, cuda, ...)")
    e.add_argument("--serve", action="store_true", help="serve this version afterwards (default: only the first)")
    e.add_argument("--no-materialize", action="store_true", help="skip feast apply + materialize")
    flags.json_output(e)
    e.set_defaults(func=run, beam_flags=True)


def run(args, extra) -> int:
    from pipelines.embed.catalog import dataset_content
    from pipelines.embed.encoders import EncoderSpec
    from pipelines.embed.job import EmbedConfig, run_embed
    from pipelines.sources.synthetic import SyntheticConfig
    from pipelines.store.feature_store import apply, materialize_item_vectors, open_store

    work = Path(args.workdir)
    catalog = args.catalog
    if args.dataset:
        synthetic = flags.json_arg(args.synthetic, SyntheticConfig, "--synthetic")
        catalog = str(dataset_content(args.dataset, Path(args.path) if args.path else None, work, synthetic))
    spec = flags.json_arg(args.encoder, EncoderSpec, "--encoder")
    if args.version:
        spec = dataclasses.replace(spec, version=args.version)
    if args.no_image:
        spec = dataclasses.replace(spec, image_model="none")
    cfg = EmbedConfig(workdir=str(work), catalog=catalog, image_root=args.image_root, encoder=spec,
                      batch_size=args.batch_size, serve=True if args.serve else None, device=args.device)
    counts = run_embed(cfg, extra)
    if not args.no_materialize:
        store = open_store(work)
        apply(store, work)  # points item_content at the serving version
        counts["materialized_items"] = materialize_item_vectors(store, work)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    rejected = f" ({flags.counted(counts['rejected'])})" if counts["rejected"] else ""
    print(f"embed: {counts['items']:,} catalog items: {counts['embedded']:,} embedded "
          f"({flags.counted(counts['modalities']) or 'none'}), {counts['skipped_unchanged']:,} unchanged, "
          f"{sum(counts['rejected'].values()):,} issues{rejected}; version {counts['version']} (serving "
          f"{counts['serving_version']}) in {counts['seconds']:.1f} s")
    if "materialized_items" in counts:
        print(f"  {counts['materialized_items']:,} item vectors online")
    return 0
