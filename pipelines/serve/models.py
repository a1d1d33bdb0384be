"""The champions `recstream serve` scores with, swapped in whole when the registry moves.

A poller thread checks the registry every poll_s (pipelines.retrain.serving.ChampionWatcher),
builds the new champion's model beside the old one and then replaces one reference: a request
in flight finishes on the model it started with, and none waits for a reload.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.config import from_dict
from pipelines.retrain.serving import ChampionWatcher, registry_of
from trainers.item_vectors import META_KEY, load_item_vectors
from trainers.ranking.batches import request_batch
from trainers.ranking.train import TrainConfig, score_batches, serving_model
from trainers.retrieval.train import RetrievalConfig, item_vectors, retrieve

LOG = logging.getLogger("recstream.serve")


@dataclass(frozen=True)
class Ranker:
    version: str
    model: object
    cfg: TrainConfig
    vectors: object

    def score(self, history: dict | None, items: np.ndarray, categories: np.ndarray, now_ms: int) -> np.ndarray:
        batch = request_batch(history, items, categories, now_ms, self.cfg.features, self.vectors)
        return score_batches(self.model, iter([batch]))


@dataclass(frozen=True)
class Retriever:
    version: str
    ids: np.ndarray  # candidate items (hashed)
    vectors: np.ndarray  # [C, d], this version's item vectors of the candidates

    def top(self, interests: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = retrieve(interests[None], self.vectors, self.ids, k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]


class Champions:
    """The ranker and retriever champions of a run folder, kept current by a poller thread."""

    def __init__(self, workdir: Path, poll_s: float = 1.0):
        self.workdir, self.poll_s = Path(workdir), poll_s
        registry = registry_of(self.workdir)
        self.registry = registry
        self.watchers = {kind: ChampionWatcher(registry, kind, poll_s=0.0) for kind in ("ranker", "retriever")}
        self.catalog = candidates(self.workdir)
        self.ranker: Ranker | None = None
        self._retrievers: dict[str, Retriever] = {}  # by version: interests online may lag a promotion
        self.retriever_version: str | None = None
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="recstream-serve-champions", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Load a new champion beside the one serving, then swap one reference (the poller calls this)."""
        version, state, meta = self.watchers["ranker"].current()
        if version is not None and (self.ranker is None or self.ranker.version != version):
            cfg = from_dict(TrainConfig, meta["config"])
            vectors = load_item_vectors(self.workdir, meta.get(META_KEY)) if cfg.item_vectors else None
            self.ranker = Ranker(version, serving_model(state, cfg, vectors, meta), cfg, vectors)  # one swap
            LOG.warning("serving ranker version %s", version)
        version, state, meta = self.watchers["retriever"].current()
        if version is not None and version != self.retriever_version:  # a promotion or a rollback
            built = self._retrievers.get(version)
            if built is None:
                cfg = from_dict(RetrievalConfig, meta["config"])
                ids, cats = self.catalog
                built = Retriever(version, ids, item_vectors(state, cfg, ids, cats))
            # The champion and the one before it: users' interests online move to a new version as
            # the promotion (or rollback) republishes them.
            kept = {v: r for v, r in self._retrievers.items() if v == self.retriever_version}
            self._retrievers = {**kept, version: built}
            self.retriever_version = version

    def retriever(self, version: str) -> Retriever | None:
        """The loaded retriever of ``version`` (the champion or the one before it), else None."""
        return self._retrievers.get(version)

    def categories(self, items: np.ndarray) -> np.ndarray:
        """Each candidate's category (0, "none", for an item the run does not know)."""
        ids, cats = self.catalog
        if len(ids) == 0:
            return np.zeros(len(items), np.int64)
        where = np.clip(np.searchsorted(ids, items), 0, len(ids) - 1)
        return np.where(ids[where] == items, cats[where], 0)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a registry mid-write or a bad version: keep serving the one we have
                LOG.exception("could not load the new champion; the current one keeps serving")

    def close(self) -> None:
        self._stop.set()


def candidates(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every item (hashed, sorted) with its category: the catalog where the run has one, else the
    behavior log's items with their latest category."""
    catalog = Path(workdir) / "catalog.parquet"
    if catalog.is_file():
        t = pq.read_table(catalog, columns=["item_id", "category_id"])
        items, cats = t.column("item_id").to_numpy(), t.column("category_id").to_numpy()
    else:
        from pipelines.retrain.serving import run_log

        log = run_log(workdir)
        newest_first = np.argsort(log.column("timestamp").to_numpy(), kind="stable")[::-1]
        items, cats = log.column("item_id").to_numpy()[newest_first], log.column("category_id").to_numpy()[newest_first]
    ids, first = np.unique(items, return_index=True)
    return ids.astype(np.int64), np.asarray(cats)[first].astype(np.int64)
