"""A job's output folder replaced whole or not at all: write aside, then swap.

    with staged(Path("runs/x/offline"), owned={"behavior_log", ..., "counts.json"}) as stage:
        ...write every output under stage...
    # runs/x/offline now holds this run's outputs; before the swap it held the previous run's

The job writes into ``<out>.partial``. When it is done, ``_SUCCESS`` is written there, the
old folder moves to ``<out>.previous``, the new one takes its place, and what the old folder
held that the job does not own (``user_interests`` the retrain loop publishes, say) moves
into the new one. A job killed at any point leaves ``out`` as the previous complete run,
never a mix (or, killed in the instant between the two renames, no ``out``: readers then ask
for the job to run again); the next run (or ``recover``) finishes or undoes a swap that was
cut short.
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator

SUCCESS = "_SUCCESS"


def _sibling(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.name}.{suffix}")


def recover(out: Path) -> None:
    """Finish a swap a crash cut short (the new folder if it was complete, else the old one),
    and drop a killed run's partial output."""
    stage, old = _sibling(out, "partial"), _sibling(out, "previous")
    if old.exists():
        if out.exists():
            _finish(out, old)  # cut short while carrying over
        elif (stage / SUCCESS).exists():
            stage.rename(out)
            _finish(out, old)
        else:
            old.rename(out)
    if stage.exists():
        shutil.rmtree(stage)


@contextmanager
def staged(out: Path, owned: Collection[str]) -> Iterator[Path]:
    """The folder to write into; swapped in for ``out`` when the block ends without error
    (an error removes it and leaves ``out`` as it was). owned: the entries the job writes."""
    out = Path(out)
    recover(out)
    stage, old = _sibling(out, "partial"), _sibling(out, "previous")
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    (stage / SUCCESS).write_text(json.dumps(sorted(owned)))
    if out.exists():
        out.rename(old)
    stage.rename(out)
    if old.exists():
        _finish(out, old)


def _finish(out: Path, old: Path) -> None:
    """Move what the old folder holds that the job does not own into the new one; drop the rest."""
    owned = set(json.loads((out / SUCCESS).read_text()))
    for entry in old.iterdir():
        if entry.name not in owned and entry.name != SUCCESS and not (out / entry.name).exists():
            entry.rename(out / entry.name)
    shutil.rmtree(old)
