"""`recstream serve`: rank and retrieve over HTTP with the champions, features read online through Feast.

    POST /rank      {"user_id": "30", "items": ["m1", "m2"], "now_ms": 1704240000000}   (now_ms optional)
                 -> {"user_id": "30", "model_version": "3", "history_length": 12,
                     "ranking": [{"item_id": "m2", "score": 0.71}, {"item_id": "m1", "score": 0.42}]}
    POST /retrieve  {"user_id": "30", "k": 20}
                 -> {"user_id": "30", "model_version": "2", "items": [{"item_id": "m7", "score": 3.1}, ...]}
    GET  /health -> {"ranker": "3", "retriever": "2"}

IDs are raw, as the data has them (or the run's hashed IDs), and come back as they were sent
(retrieved items as the run's raw IDs where its ID dictionary has them). Handlers are async:
they run one at a time on the event loop, so the Feast store is never used from two threads.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from features.id_dictionary import IdDictionary
from feature_repo.definitions import USER_INTERESTS
from pipelines.serve.models import Champions
from pipelines.store.feature_store import OnlineStore, open_store, read_rows

MAX_CANDIDATES = 10_000


class RankRequest(BaseModel):
    user_id: str | int
    items: list[str | int] = Field(min_length=1, max_length=MAX_CANDIDATES)
    now_ms: int | None = None


class RetrieveRequest(BaseModel):
    user_id: str | int
    k: int = Field(default=20, ge=1, le=1000)


def create_app(workdir: Path, online: OnlineStore | None = None, poll_s: float = 1.0) -> FastAPI:
    workdir = Path(workdir)
    store = open_store(workdir, online or OnlineStore())
    champions = Champions(workdir, poll_s)
    users, items = IdDictionary.load(workdir, "user_id"), IdDictionary.load(workdir, "item_id")
    known_items = frozenset(champions.catalog[0].tolist())  # hashed IDs of the run's items, taken as they are
    app = FastAPI(title="recstream", description=__doc__.splitlines()[0])

    @app.get("/health")
    async def health() -> dict:
        ranker = champions.ranker
        return {"ranker": ranker and ranker.version, "retriever": champions.retriever_version}

    @app.post("/rank")
    async def rank(req: RankRequest) -> dict:
        ranker = champions.ranker  # this request's model, whatever a reload does meanwhile
        if ranker is None:
            raise HTTPException(503, f"no champion ranker in {workdir / 'registry'} yet; run `recstream retrain`")
        user = int(users.resolve([req.user_id])[0][0])
        candidates, _ = items.resolve(req.items, known_items)
        history = read_rows(store, "user_sequence", [user], arrays=True)[0]
        now = req.now_ms if req.now_ms is not None else int(time.time() * 1000)
        scores = ranker.score(history, candidates, champions.categories(candidates), now)
        order = np.argsort(-scores, kind="stable")
        return {"user_id": req.user_id, "model_version": ranker.version,
                "history_length": 0 if history is None else int(history["seq_length"]),
                "ranking": [{"item_id": req.items[i], "score": float(scores[i])} for i in order]}

    @app.post("/retrieve")
    async def retrieve(req: RetrieveRequest) -> dict:
        user = int(users.resolve([req.user_id])[0][0])
        row = read_rows(store, USER_INTERESTS, [user])[0]
        if row is None:
            raise HTTPException(404, f"no interest vectors online for user {req.user_id!r}: a retriever publishes "
                                     "them when it is promoted (`recstream retrain`)")
        retriever = champions.retriever(row["model_version"])
        if retriever is None:
            raise HTTPException(503, f"user {req.user_id!r}'s interests are from retriever version "
                                     f"{row['model_version']}, which is not loaded (serving "
                                     f"{champions.retriever_version}); they are republished on promotion")
        interests = np.asarray(row["interests"], np.float32).reshape(int(row["num_interests"]), int(row["dim"]))
        ids, scores = retriever.top(interests, req.k)
        raws = items.raw(ids).to_pylist()
        return {"user_id": req.user_id, "model_version": retriever.version,
                "items": [{"item_id": raw if raw is not None else int(i), "score": float(s)}
                          for i, raw, s in zip(ids, raws, scores)]}

    app.router.on_shutdown.append(champions.close)
    return app
