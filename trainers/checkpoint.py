"""Sharded checkpoints with torch.distributed.checkpoint (DCP): resumable, self-describing, verified.

One checkpoint is a folder (train() names them ``<checkpoint_dir>/step-00000100``)::

    .metadata, __0_0.distcp, __1_0.distcp, ...   DCP: each rank writes the shards it holds of
                                                 {"model": DMP state_dict, "optim": optimizer state_dict}
    recstream.json                               what the checkpoint is, and a sha256 per DCP file

recstream.json holds the model config, the TrainConfig, the feature spec, the item-vector
encoder version (or null), the data position (global steps done, epoch, batch in epoch;
the seed and batch size are in the TrainConfig) and a fingerprint of the training
examples, the world size and sharding it was written with, library versions, the files'
sha256, and ``digest``: a sha256 over all of that, so an edited file is refused too. That
catches corruption, not tampering (DCP unpickles ``.metadata``: a checkpoint is trusted input).
With $RECSTREAM_CHECKPOINT_KEY set, ``signature`` (HMAC-SHA256 of the record under that key)
is written too, and only checkpoints signed with that key load; a signed one needs the key.

- ``save_checkpoint`` (collective) writes into ``<path>.partial`` and renames it into place,
  so a reader never sees half a checkpoint. The files must land on storage every rank and
  rank 0 can read (one machine, or a shared file system).
- ``load_checkpoint`` (collective) checks the digests and that the checkpoint was made for
  this model and run (CheckpointMismatch names every differing field), then loads the
  weights and the optimizer state (fused RowWiseAdagrad momentum, dense Adam moments and
  step) in place. DCP reshards: a table_wise / row_wise checkpoint resumes at another
  world size; column_wise keeps momentum per column block, so it resumes only at its own.
- ``load_unsharded`` returns a plain CPU state_dict for the unsharded model, with no
  process group: what serving loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import shutil
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torchrec
from torch.distributed.checkpoint import CheckpointException, FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from features.errors import StateError
from features.labels import EXAMPLE_SCHEMA
from trainers.digest import KEY_ENV, file_sha256, record_hmac, record_sha256, signing_key
from trainers.distributed import agree, rank_and_world

FORMAT = "recstream-dcp-1"
META_FILE = "recstream.json"
STEP_DIR = re.compile(r"^step-(\d+)$")
# TrainConfig fields a resumed run may change: they do not alter the steps it continues with.
FREE_FIELDS = ("steps", "progress_every", "threads", "eval_batch_size", "device")
SECTIONS = ("model_config", "train_config", "feature_spec", "item_embedding_version", "data")


class CheckpointError(StateError):
    """A checkpoint is missing, incomplete or corrupt."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint made for another model config or another run."""


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def latest(root: str | Path) -> Path | None:
    """The complete checkpoint with the most steps under root, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def resolve(path: str | Path) -> Path:
    """A checkpoint folder as given, or the latest checkpoint under a checkpoint_dir."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    found = latest(path)
    if found is None:
        raise CheckpointError(f"{path} is not a checkpoint (no {META_FILE}) and holds no step-* checkpoint")
    return found


def describe(train_config, model_config, feature_spec, item_embedding_version: str | None,
             examples: pa.Table) -> dict:
    """The SECTIONS of a run (configs are dataclasses): what a checkpoint records and a resumed run
    must match. ``examples``' fingerprint ties the data position to the rows it counts."""
    digest = hashlib.sha256()
    for name in EXAMPLE_SCHEMA.names:  # all numeric: the bytes do not depend on Arrow's chunking
        digest.update(np.ascontiguousarray(examples.column(name).to_numpy()).tobytes())
    return {"model_config": dataclasses.asdict(model_config), "train_config": dataclasses.asdict(train_config),
            "feature_spec": dataclasses.asdict(feature_spec), "item_embedding_version": item_embedding_version,
            "data": {"train_examples": examples.num_rows, "examples_sha256": digest.hexdigest()}}


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, description: dict, step: int,
                    steps_per_epoch: int) -> Path:
    """Collective: write the sharded model and optimizer state plus recstream.json to ``path``,
    after ``step`` global steps. ``description`` is describe()'s; an existing checkpoint at
    ``path`` is replaced once the new one is complete."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    rank, world = rank_and_world()
    error = None
    if rank == 0:
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        except OSError as err:
            error = f"cannot create checkpoint folder {partial}: {err}"
    _together(error)  # also the barrier: no rank writes before the folder exists
    with _quiet():
        dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(partial))
    _barrier()
    error = None
    if rank == 0:
        try:
            files = {f.name: file_sha256(f) for f in sorted(partial.iterdir())}
            position = {"step": step, "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch}
            record = {"format": FORMAT, **description, "position": position, "world_size": world,
                      "versions": {"torch": torch.__version__, "torchrec": torchrec.__version__},
                      "created": datetime.now(timezone.utc).isoformat(), "files": files}
            record["digest"] = _digest(record)
            key = signing_key()
            if key is not None:
                record["signature"] = record_hmac(record, key)
            (partial / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
            if path.exists():
                shutil.rmtree(path)
            partial.rename(path)
        except OSError as err:
            error = f"cannot write checkpoint {path}: {err}"
    _together(error)
    return path


def read_metadata(path: str | Path, verify: bool = True) -> dict:
    """recstream.json of a checkpoint; with verify, every file's sha256 and the record's digest are
    checked first (CheckpointError names the file that differs, is missing or is unexpected)."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path / META_FILE}: {err}") from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META_FILE} is format {meta.get('format')!r}, expected {FORMAT!r}")
    if not verify:
        return meta
    if meta.get("digest") != _digest(meta):
        raise CheckpointError(f"{path / META_FILE} was modified: its digest does not match its content")
    _check_signature(path, meta)
    on_disk = {f.name for f in path.iterdir() if f.name != META_FILE}
    extra = sorted(on_disk - set(meta["files"]))
    if extra:
        raise CheckpointError(f"checkpoint {path} holds unexpected file(s) {extra}")
    for name, digest in sorted(meta["files"].items()):
        if name not in on_disk:
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        actual = file_sha256(path / name)
        if actual != digest:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} has sha256 {actual}, "
                                  f"recorded {digest}")
    return meta


# Config fields added after checkpoints were first written, with the value every older
# checkpoint was trained with (DIEN's and SDIM's settings: no older model had them).
ADDED_FIELDS = {"aux_loss_weight": 1.0, "sdim_hashes": 48, "sdim_bits": 3}


def check_compatible(meta: dict, expected: dict, where: str | Path = "checkpoint") -> None:
    """Raise CheckpointMismatch naming every field in which ``meta`` differs from ``expected``.
    Only the SECTIONS that ``expected`` holds are compared; TrainConfig's FREE_FIELDS never are."""
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as they were stored
    diffs = []
    for section in SECTIONS:
        if section not in expected:
            continue
        ours, theirs = meta.get(section), expected[section]
        if isinstance(ours, dict) and isinstance(theirs, dict) and section in ("model_config", "train_config"):
            # A checkpoint older than a field was made with its default (only where this run has the field).
            ours = {**{k: v for k, v in ADDED_FIELDS.items() if k in theirs}, **ours}
        if isinstance(ours, dict) and isinstance(theirs, dict):
            skip = FREE_FIELDS if section == "train_config" else ()
            diffs += [f"{section}.{k}: checkpoint {ours.get(k)!r}, this run {theirs.get(k)!r}"
                      for k in sorted(set(ours) | set(theirs)) if k not in skip and ours.get(k) != theirs.get(k)]
        elif ours != theirs:
            diffs.append(f"{section}: checkpoint {ours!r}, this run {theirs!r}")
    if diffs:
        raise CheckpointMismatch(f"{where} was made for another model or run; differing: " + "; ".join(diffs))


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, expected: dict) -> dict:
    """Collective: verify, check against ``expected`` (as for check_compatible), then load the model
    and optimizer state in place. Returns the checkpoint's metadata (its ``position`` says where to go on)."""
    path, meta, error = Path(path), None, None
    rank, world = rank_and_world()
    try:
        path = resolve(path)
        meta = read_metadata(path, verify=rank == 0)
        check_compatible(meta, expected, path)
        if meta["train_config"].get("sharding") == "column_wise" and meta["world_size"] != world:
            raise CheckpointMismatch(f"{path} is column_wise at world size {meta['world_size']}: its RowWiseAdagrad "
                                     f"state is kept per column block, so resume it at that world size, not {world}")
    except CheckpointError as err:
        error = err
    message = agree(None if error is None else str(error))
    if message:
        raise error if error is not None else CheckpointError(message)
    for _, opt in optimizer.optimizers:
        if not opt.state:  # torch optimizers create their state lazily; DCP loads in place
            opt.init_state()
    state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
    try:
        with _quiet():
            dcp.load(state, checkpoint_id=str(path))
    except (CheckpointException, ValueError, RuntimeError) as err:  # every rank gets DCP's error
        raise CheckpointError(f"cannot load {path} into this model: {err}") from err
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    return meta


def load_unsharded(path: str | Path, expected: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(plain CPU state_dict for the unsharded model, metadata), verified; no process group used.
    ``expected`` (e.g. {"model_config": ...}) is checked as in check_compatible."""
    path = resolve(path)
    meta = read_metadata(path, verify=True)
    if expected:
        check_compatible(meta, expected, path)
    entries = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    state = {key[len("model."):]: torch.empty(item.size, dtype=item.properties.dtype)
             for key, item in entries.items() if key.startswith("model.") and isinstance(item, TensorStorageMetadata)}
    with _quiet():
        dcp.load({"model": state}, checkpoint_id=str(path), no_dist=True)
    return state, meta


def _digest(record: dict) -> str:
    return record_sha256({k: v for k, v in record.items() if k not in ("digest", "signature")})


def _check_signature(path: Path, meta: dict) -> None:
    """With a key set, the record must carry its signature; without one, a signed record is refused
    (it would load unchecked)."""
    key, signature = signing_key(), meta.get("signature")
    if key is None:
        if signature is not None:
            raise CheckpointError(f"checkpoint {path} is signed: set {KEY_ENV} to the key it was signed with")
        return
    if signature is None:
        raise CheckpointError(f"checkpoint {path} is not signed, and {KEY_ENV} is set: only signed checkpoints "
                              f"load (unset it to load unsigned ones you trust)")
    unsigned = {k: v for k, v in meta.items() if k != "signature"}
    if not hmac.compare_digest(str(signature), record_hmac(unsigned, key)):
        raise CheckpointError(f"checkpoint {path}: its signature does not match {KEY_ENV} (another key, or "
                              f"modified since it was signed)")



def _together(error: str | None) -> None:
    """Collective: raise CheckpointError on every rank if any rank has an error."""
    message = agree(error)
    if message:
        raise CheckpointError(message)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def _quiet() -> Iterator[None]:
    """torchrec 1.8's EmbeddingCollection state is ShardedTensor, which warns on every access; DCP
    warns when it loads with no process group, which is what load_unsharded means to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use DTensor", category=FutureWarning)
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield
