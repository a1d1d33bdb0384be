"""What serving reads from the registry: the champion, reloaded when it changes; rollback as a command.

    watcher = ChampionWatcher(registry, "ranker")
    version, state, meta = watcher.current()      # reloads only when the alias moved (checked every poll_s)

    rollback(workdir, "retriever", why="recall fell")   # the previous champion serves again; for a
                                                         # retriever its interest vectors are republished
"""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from features.pit import sort_log
from trainers.registry import Registry


class ChampionWatcher:
    """The champion of one model, loaded once per version; a promotion or rollback is picked up
    at the first current() call at least ``poll_s`` after it."""

    def __init__(self, registry: Registry, model: str, poll_s: float = 1.0):
        self.registry, self.model, self.poll_s = registry, model, poll_s
        self.version, self.state, self.meta, self._checked = None, None, None, 0.0

    def current(self) -> tuple[str | None, dict | None, dict | None]:
        now = time.monotonic()
        if self.version is None or now - self._checked >= self.poll_s:
            self._checked = now
            version = self.registry.champion(self.model)
            if version != self.version and version is not None:
                self.state, self.meta = self.registry.load(self.model, version)
                self.version = version
        return self.version, self.state, self.meta


def registry_of(workdir: Path, tracking_uri: str | None = None) -> Registry:
    """The run folder's registry (WORKDIR/registry), as the demo and the loop use it."""
    return Registry(Path(workdir) / "registry", tracking_uri)


def rollback(workdir: Path, model: str, to: str | None = None, why: str = "", by: str | None = None,
             tracking_uri: str | None = None) -> str:
    """Make the previous champion (or ``to``) serve again; a retriever's users get that version's
    interest vectors online again. Returns the version now serving."""
    registry = registry_of(workdir, tracking_uri)
    version = registry.rollback(model, to=to, by=by, why=why)
    if model == "retriever":
        republish(workdir, registry, version)
    return version


def promote(workdir: Path, model: str, version: str, why: str = "", by: str | None = None,
            tracking_uri: str | None = None) -> None:
    """Make ``version`` the champion by hand (its gates are not rerun); republishes a retriever's interests."""
    registry = registry_of(workdir, tracking_uri)
    registry.promote(model, version, by=by, why=why)
    if model == "retriever":
        republish(workdir, registry, version)


def republish(workdir: Path, registry: Registry, version: str) -> int:
    """Write a retriever version's interest vectors for every user of the run's log."""
    from pipelines.config import from_dict
    from pipelines.retrain.publish import publish_interests
    from trainers.retrieval.train import RetrievalConfig

    state, meta = registry.load("retriever", version)
    cfg = from_dict(RetrievalConfig, meta["config"])
    log = run_log(workdir)
    return publish_interests(Path(workdir), state, cfg, version, log.column("user_id").to_numpy(), log)


def run_log(workdir: Path) -> pa.Table:
    """The run's behavior log: the backfill's, extended by every window the loop committed."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from pipelines.retrain.state import Store

    base = ds.dataset(Path(workdir) / "offline" / "behavior_log", format="parquet").to_table()
    store_dir = Path(workdir) / "retrain"
    parts = []
    if store_dir.is_dir():
        state = Store(store_dir)
        latest = state.latest()
        done = state.read(latest).window if latest else 0
        parts = [pq.read_table(p) for p in sorted((store_dir / "log").glob("window-*.parquet"))
                 if int(p.stem.split("-")[1]) <= done]
    return sort_log(pa.concat_tables([base, *parts]) if parts else base)
