"""`recstream serve` over real HTTP: /rank scores equal the offline predict on the same history,
/retrieve equals the offline retrieval from the published interests, and a promotion swaps the
ranker in while requests keep succeeding."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from features.ids import stable_id
from features.pit import sort_log
from pipelines.config import to_dict
from pipelines.processes import free_port
from pipelines.retrain.publish import read_interests
from pipelines.retrain.serving import republish
from pipelines.serve.models import candidates
from pipelines.store.feature_store import open_store
from pipelines.store.publish import publish
from tests.pipelines.retrain.runs import RANKER, RETRIEVER, register_champions, small_run, train_champions
from trainers.ranking.train import predict
from trainers.registry import Registry
from trainers.retrieval.train import item_vectors, retrieve

pytestmark = [pytest.mark.engine, pytest.mark.training]
CAPS = {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 50}


def call(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    small_run(work)
    champions = train_champions(work)
    versions = register_champions(work, champions)
    publish(open_store(work), work, CAPS)
    republish(work, Registry(work / "registry"), versions["retriever"])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--workdir", str(work), "--port", str(port),
                             "--poll-s", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if call(port, "/health")[1]["ranker"] == versions["ranker"]:
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"recstream serve exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.3)
    log = sort_log(ds.dataset(work / "offline" / "behavior_log", format="parquet").to_table())
    yield work, port, champions, log
    proc.terminate()
    proc.wait(timeout=30)


def offline_scores(state, log, user_raw, items_raw, now_ms, work):
    ids, cats = candidates(work)
    items = np.array([stable_id(i) for i in items_raw], np.int64)
    where = np.clip(np.searchsorted(ids, items), 0, len(ids) - 1)
    known = ids[where] == items  # an item the run never saw has no category (0)
    examples = pa.table({"user_id": np.full(len(items), stable_id(user_raw), np.int64), "item_id": items,
                         "category_id": np.where(known, cats[where], 0),
                         "timestamp": np.full(len(items), now_ms, np.int64)})
    return predict(state, RANKER, examples, log)


def test_rank_scores_equal_the_offline_predict(served):
    work, port, champions, log = served
    now = int(log.column("timestamp").to_numpy().max()) + 1
    items = list(range(0, 200, 9))  # raw item IDs, as the data has them
    for user in (3, 17, 42):
        status, got = call(port, "/rank", {"user_id": user, "items": items, "now_ms": now})
        assert status == 200, got
        assert got["history_length"] > 0 and got["model_version"] == "1"
        want = offline_scores(champions["ranker"][0], log, user, items, now, work)
        scores = {r["item_id"]: r["score"] for r in got["ranking"]}
        assert [r["score"] for r in got["ranking"]] == sorted(scores.values(), reverse=True)
        np.testing.assert_allclose([scores[i] for i in items], want, rtol=1e-5)


def test_retrieve_equals_the_offline_retrieval(served):
    work, port, champions, _ = served
    state = champions["retriever"][0]
    ids, cats = candidates(work)
    for user in (3, 17):
        status, got = call(port, "/retrieve", {"user_id": user, "k": 10})
        assert status == 200, got
        interests = read_interests(work, [stable_id(user)])[stable_id(user)]
        want, _ = retrieve(interests[None], item_vectors(state, RETRIEVER, ids, cats), ids, 10)
        assert [r["item_id"] for r in got["items"]] == want[0].tolist()


def test_bad_requests_are_named(served):
    _, port, _, _ = served
    assert call(port, "/rank", {"user_id": 3, "items": []})[0] == 422
    status, got = call(port, "/retrieve", {"user_id": "nobody"})
    assert status == 404 and "no interest vectors online for user 'nobody'" in got["detail"]


def test_a_promotion_swaps_the_ranker_without_failing_a_request(served):
    work, port, champions, log = served
    now = int(log.column("timestamp").to_numpy().max()) + 1
    body = {"user_id": 3, "items": [1, 2, 3, 4], "now_ms": now}
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            results.append(call(port, "/rank", body))
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        state = {k: v * 2 if k.endswith("item.weight") else v for k, v in champions["ranker"][0].items()}
        registry = Registry(work / "registry")
        version = registry.register("ranker", state, {"config": to_dict(RANKER)}, why="a test promotion")
        registry.promote("ranker", version, why="a test promotion")
        deadline = time.monotonic() + 60
        while call(port, "/health")[1]["ranker"] != version and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # requests on the new model too
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    seen = {got["model_version"] for _, got in results}
    assert seen == {"1", version}, seen
    status, got = call(port, "/rank", body)
    want = offline_scores(state, log, 3, [1, 2, 3, 4], now, work)
    np.testing.assert_allclose([{r["item_id"]: r["score"] for r in got["ranking"]}[i] for i in (1, 2, 3, 4)], want,
                               rtol=1e-5)


def test_a_retriever_promotion_and_its_rollback_both_reach_serving(served):
    work, port, champions, _ = served
    registry = Registry(work / "registry")
    before = call(port, "/health")[1]["retriever"]
    state = {k: v * 2 for k, v in champions["retriever"][0].items()}
    version = registry.register("retriever", state, {"config": to_dict(RETRIEVER)}, why="a test promotion")
    registry.promote("retriever", version, why="a test promotion")
    for want in (version, before):  # promoted, then rolled back to the version it had loaded
        if want == before:
            registry.rollback("retriever", why="a test rollback")
        deadline = time.monotonic() + 60
        while call(port, "/health")[1]["retriever"] != want and time.monotonic() < deadline:
            time.sleep(0.1)
        assert call(port, "/health")[1]["retriever"] == want
