"""Run trainers.ranking.train.train on N ranks: under torchrun, or spawned here with torchrun's env vars.

    torchrun --standalone --nproc-per-node 2 -m trainers.launch \\
        --train train.parquet --eval eval.parquet --behavior-log log.parquet --sharding row_wise --out runs/t
    python -m trainers.launch --spawn 2 ...                   # the same, spawned on this machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:PORT -m trainers.launch --device cuda ...

Every rank reads the same Parquet tables (examples with features.labels.EXAMPLE_SCHEMA
columns; the behavior log with features.pit.LOG_COLUMNS) and trains on its share of
each global batch. ``--device cuda`` uses NCCL and GPU LOCAL_RANK; the default is CPU
and gloo. Rank 0 prints progress and, with ``--out``, writes ``result.json`` (config,
losses, eval metrics, samples/s) and ``model.pt`` (the unsharded state_dict, which loads
into the unsharded model for serving). ``--checkpoint-dir`` / ``--resume-from`` are
train()'s DCP checkpoints.

``spawn_local(world_size, fn, *args)`` runs ``fn(*args)`` on world_size local processes
inside one initialized process group (RANK, WORLD_SIZE, LOCAL_RANK set as torchrun would; the
ranks meet through a file, not a port) and returns each rank's result: what the --spawn flag
and the 2-process tests use.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import tempfile
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.ranking.train import TrainConfig, TrainResult, train

OVERRIDES = ("steps", "batch_size", "seed", "sharding", "device")  # TrainConfig keys with their own flag


def spawn_local(world_size: int, fn: Callable[..., Any], *args: Any, backend: str = "gloo",
                timeout_s: float = 600.0) -> list[Any]:
    """fn(*args) on ranks 0..world_size-1 (processes started with "spawn"); the list of their return
    values, by rank. A rank that raises ends the others and the error is raised here.
    ``timeout_s`` bounds each collective, so a rank stuck waiting for a dead one stops."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory(prefix="recstream-spawn-") as tmp:
        mp.start_processes(_child, args=(world_size, backend, timeout_s, tmp, fn, args),
                           nprocs=world_size, start_method="spawn")
        out = []
        for rank in range(world_size):
            with open(Path(tmp) / f"rank{rank}.pkl", "rb") as f:
                out.append(pickle.load(f))
        return out


def _child(rank: int, world_size: int, backend: str, timeout_s: float, tmp: str,
           fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    # the ranks meet through a file in the call's own folder: no port to pick (and lose to another
    # process between picking it and binding it)
    dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        result = fn(*args)
    finally:
        dist.destroy_process_group()
    with open(Path(tmp) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainers.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="training examples (Parquet file or folder)")
    p.add_argument("--eval", required=True, help="evaluation examples (Parquet file or folder)")
    p.add_argument("--behavior-log", required=True, help="behavior log (Parquet file or folder)")
    p.add_argument("--config", help="a TOML file of TrainConfig settings")
    for key in OVERRIDES:
        p.add_argument(f"--{key.replace('_', '-')}", type=int if key in ("steps", "batch_size", "seed") else str,
                       help=f"TrainConfig.{key} (overrides --config)")
    p.add_argument("--item-vectors", metavar="WORKDIR", help="read item vectors from this run folder")
    p.add_argument("--checkpoint-dir", help="write DCP checkpoints here")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: only the last)")
    p.add_argument("--resume-from", help="a checkpoint, or a checkpoint dir (its latest), to continue from")
    p.add_argument("--out", help="rank 0 writes result.json and model.pt here")
    # Not --nproc or --log: torchrun's parser refuses prefixes of its own flags even after the module name.
    p.add_argument("--spawn", type=int, default=0, metavar="N",
                   help="spawn N local ranks here instead of running under torchrun")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="bound on each collective (with --spawn)")
    return p


def config_from(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from --config (unknown keys are errors naming the valid ones) and the flags."""
    data: dict = {}
    if args.config:
        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SystemExit(f"cannot read --config {args.config}: {err}") from None
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise SystemExit(f"--config {args.config}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    data.update({k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
    try:
        return TrainConfig(**data)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"bad training config: {err}") from None


def run(args: argparse.Namespace) -> TrainResult:
    """One rank's work: read the tables, train, and on rank 0 write the outputs."""
    cfg = config_from(args)
    if cfg.device == "cuda" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    vectors = None
    if cfg.item_vectors:
        if not args.item_vectors:
            raise SystemExit("the config sets item_vectors = true: pass --item-vectors WORKDIR")
        from trainers.item_vectors import load_item_vectors
        vectors = load_item_vectors(args.item_vectors)
    # torchrun sets RANK; train() joins the group only once called.
    say = print if int(os.environ.get("RANK", "0")) == 0 else (lambda *a, **k: None)
    result = train(pq.read_table(args.train), pq.read_table(args.eval), pq.read_table(args.behavior_log), cfg,
                   progress=lambda step, loss: say(f"step {step:>6}  loss {loss:.4f}", flush=True), vectors=vectors,
                   checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                   resume_from=args.resume_from)
    if result.rank == 0:
        say(f"world size {result.world_size}, {cfg.sharding}: {result.samples_per_s:,.0f} samples/s, "
            f"eval {result.eval_metrics}", flush=True)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(result.state_dict, out / "model.pt")
            (out / "result.json").write_text(json.dumps({
                "config": dataclasses.asdict(cfg), "world_size": result.world_size, "losses": result.losses,
                "eval_metrics": result.eval_metrics, "samples_per_s": result.samples_per_s,
                "train_seconds": result.train_seconds, "start_step": result.start_step,
                "checkpoint": result.checkpoint, **result.metadata()}, indent=2))
    return dataclasses.replace(result, state_dict={}, eval_scores=None)  # small, for spawn_local's pickle


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.spawn:
        spawn_local(args.spawn, run, args, backend="nccl" if config_from(args).device == "cuda" else "gloo",
                    timeout_s=args.timeout_s)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
