"""The model registry: MLflow's Model Registry, plus what it lacks (verified artifacts, a promotion history).

    registry = Registry(workdir / "registry")       # MLflow on sqlite:///<root>/mlflow.db, artifacts in <root>
    version = registry.register("ranker", state_dict, metadata, files={"checkpoint": dcp_dir})
    registry.promote("ranker", version, by="retrain window 7", why="gates passed")
    state, meta = registry.load("ranker")           # the champion, its digest verified
    registry.rollback("ranker", by="alice", why="CTR fell")   # the previous champion serves again
    registry.history("ranker")                      # who did what, when and why

A version is one MLflow run's artifacts (model.pt, metadata.json and any extra files or folders,
such as the sharded checkpoint a fine-tuning run resumes from) and a model version pointing at
them. The artifacts are logged before the version is created, so a version that exists is
complete; model.pt's sha256 is a version tag, and load() refuses a file that differs (a guard
against corruption, not tampering: anyone who can write the artifacts can write the tag). The
alias ``champion`` marks what serves. MLflow keeps no history of aliases, so every register,
promote, reject and rollback is also appended to <root>/history.sqlite with who, when (UTC,
ISO 8601) and why. A tracking server URI (``tracking_uri``, or $MLFLOW_TRACKING_URI) replaces the
local SQLite store; the history stays under root.
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from features.errors import StateError
from trainers.digest import file_sha256

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
CHAMPION = "champion"
EXPERIMENT = "recstream"
ACTIONS = ("register", "promote", "reject", "rollback")


class RegistryError(StateError):
    """A registry entry is missing, corrupt or not what was asked for."""


@dataclass(frozen=True)
class Version:
    """One registered version as people read it."""

    model: str
    version: str
    created: str  # UTC ISO 8601
    tags: dict
    champion: bool


class Registry:
    """Versions of named models ("ranker", "retriever") in MLflow, with a champion and a history."""

    def __init__(self, root: str | Path, tracking_uri: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
            or f"sqlite:///{self.root / 'mlflow.db'}"
        self._client = None
        self._history = _History(self.root / "history.sqlite")

    @property
    def client(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in people's logs
            from mlflow import MlflowClient

            for name in ("mlflow", "alembic"):  # after the import, which sets MLflow's own levels
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def register(self, model: str, state_dict: dict[str, torch.Tensor], metadata: dict, *,
                 files: dict[str, str | Path] | None = None, tags: dict[str, str] | None = None,
                 metrics: dict[str, float] | None = None, by: str | None = None, why: str = "") -> str:
        """A new version of ``model`` with these weights, metadata (JSON) and extra files; returns
        its number as a string. ``tags`` (strings) are searchable (find()); ``metrics`` go to the run."""
        try:
            body = json.dumps(metadata, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise RegistryError(f"metadata must be JSON-serializable: {err}") from None
        with tempfile.TemporaryDirectory(prefix="recstream-version-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            torch.save(state_dict, staging / MODEL_FILE)
            (staging / METADATA_FILE).write_text(body)
            for name, path in (files or {}).items():
                (shutil.copytree if Path(path).is_dir() else shutil.copy)(path, staging / name)
            digest = file_sha256(staging / MODEL_FILE)
            run_id = self._run(model, staging, metrics or {}, tags or {})
        self._ensure_model(model)
        all_tags = {**(tags or {}), "sha256": digest}
        mv = _retry(lambda: self.client.create_model_version(model, source=self._source(run_id), run_id=run_id,
                                                             tags=all_tags))
        self._history.add(model, "register", mv.version, None, by, why)
        return str(mv.version)

    def find(self, model: str, **tags: str) -> str | None:
        """The newest version of ``model`` whose tags include all of ``tags``, or None."""
        if not self._exists(model):
            return None
        found = [v for v in self._versions(model) if all(v.tags.get(k) == str(t) for k, t in tags.items())]
        return str(max(int(v.version) for v in found)) if found else None

    def champion(self, model: str) -> str | None:
        """The version the alias ``champion`` points at, or None."""
        from mlflow.exceptions import MlflowException

        if not self._exists(model):
            return None
        try:
            return str(self.client.get_model_version_by_alias(model, CHAMPION).version)
        except MlflowException:
            return None

    def promote(self, model: str, version: str, by: str | None = None, why: str = "") -> None:
        """Point ``champion`` at ``version`` (it takes effect for the next load)."""
        self._check(model, version)
        previous = self.champion(model)
        _retry(lambda: self.client.set_registered_model_alias(model, CHAMPION, str(version)))
        self._history.add(model, "promote", version, previous, by, why)

    def reject(self, model: str, version: str | None, by: str | None = None, why: str = "") -> None:
        """Record that a candidate did not pass its gates (the champion is unchanged)."""
        self._history.add(model, "reject", version, self.champion(model), by, why)

    def rollback(self, model: str, to: str | None = None, by: str | None = None, why: str = "") -> str:
        """Make the previous champion (or version ``to``) the champion again; returns it."""
        current = self.champion(model)
        if to is None:  # the champion the current one replaced when it was promoted
            made = [e for e in self._history.events(model) if e["action"] == "promote" and e["version"] == current]
            to = made[-1]["previous"] if made else None
            if to is None:
                raise RegistryError(f"{model}: no earlier champion to roll back to (champion {current}); "
                                    f"name one with --to VERSION")
        self._check(model, to)
        _retry(lambda: self.client.set_registered_model_alias(model, CHAMPION, str(to)))
        self._history.add(model, "rollback", to, current, by, why)
        return str(to)

    def load(self, model: str, version: str | None = None, dest: str | Path | None = None
             ) -> tuple[dict[str, torch.Tensor], dict]:
        """(state_dict, metadata) of ``version`` (default: the champion), model.pt checked against its
        recorded sha256. ``dest``: keep the downloaded artifacts there (e.g. to resume a checkpoint)."""
        version = version or self.champion(model)
        if version is None:
            raise RegistryError(f"{model} has no champion yet: train one (recstream demo, recstream retrain) "
                                f"or promote a version")
        folder = self.artifacts(model, version, dest)
        mv = self.client.get_model_version(model, str(version))
        path = folder / MODEL_FILE
        if not path.is_file():
            raise RegistryError(f"{model} version {version}: {path} is missing")
        digest = file_sha256(path)
        if digest != mv.tags.get("sha256"):
            raise RegistryError(f"{model} version {version}: {path} is corrupt: sha256 {digest} differs from the "
                                f"recorded {mv.tags.get('sha256')}")
        meta = json.loads((folder / METADATA_FILE).read_text())
        return torch.load(path, map_location="cpu", weights_only=True), {**meta, "version": str(version)}

    def artifacts(self, model: str, version: str, dest: str | Path | None = None) -> Path:
        """A local folder with the version's files (model.pt, metadata.json, extras)."""
        self._check(model, version)
        mv = self.client.get_model_version(model, str(version))
        target = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="recstream-model-"))
        target.mkdir(parents=True, exist_ok=True)
        got = self.client.download_artifacts(mv.run_id, "model", dst_path=str(target))
        return Path(got)

    def versions(self, model: str) -> list[Version]:
        """Every version of ``model``, oldest first."""
        if not self._exists(model):
            return []
        champ = self.champion(model)
        return [Version(model, str(v.version), _iso(v.creation_timestamp), dict(v.tags), str(v.version) == champ)
                for v in sorted(self._versions(model), key=lambda v: int(v.version))]

    def models(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def history(self, model: str) -> list[dict]:
        """Every register, promote, reject and rollback of ``model``, oldest first."""
        return self._history.events(model)

    def _run(self, model: str, staging: Path, metrics: dict, tags: dict) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self._create_experiment()
        run = _retry(lambda: self.client.create_run(exp_id, tags={"model": model, **tags},
                                                    run_name=f"{model} {tags.get('window', '')}".strip()))
        run_id = run.info.run_id
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(_metric_name(k), float(v), now, 0) for k, v in metrics.items()])
        self.client.log_artifacts(run_id, str(staging), "model")
        self.client.set_terminated(run_id)
        return run_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=(self.root / "artifacts").as_uri())
        except MlflowException:  # another writer created it first
            return self.client.get_experiment_by_name(EXPERIMENT).experiment_id

    def _source(self, run_id: str) -> str:
        return f"{self.client.get_run(run_id).info.artifact_uri}/model"

    def _ensure_model(self, model: str) -> None:
        from mlflow.exceptions import MlflowException

        if not self._exists(model):
            try:
                self.client.create_registered_model(model)
            except MlflowException:
                pass  # created by another writer in between

    def _exists(self, model: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model)
            return True
        except MlflowException:
            return False

    def _versions(self, model: str):
        return self.client.search_model_versions(f"name = '{model}'")

    def _check(self, model: str, version: str) -> None:
        if not self._exists(model) or str(version) not in {str(v.version) for v in self._versions(model)}:
            have = [str(v.version) for v in self._versions(model)] if self._exists(model) else []
            raise RegistryError(f"{model} has no version {version!r}; it has {have or 'none'}")


class _History:
    """The append-only promotion history (SQLite: safe with concurrent writers)."""

    def __init__(self, path: Path):
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT, "
                       "action TEXT, version TEXT, previous TEXT, who TEXT, at TEXT, why TEXT)")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, model: str, action: str, version: str | None, previous: str | None, who: str | None,
            why: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO events (model, action, version, previous, who, at, why) VALUES (?,?,?,?,?,?,?)",
                       (model, action, None if version is None else str(version), previous, who or _who(),
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), why))

    def events(self, model: str) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT action, version, previous, who, at, why FROM events WHERE model = ? ORDER BY id",
                              (model,)).fetchall()
        return [dict(zip(("action", "version", "previous", "who", "at", "why"), r)) for r in rows]


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _metric_name(name: str) -> str:
    """MLflow's metric names take letters, digits and _-. /: only: recall@50 becomes recall_at_50."""
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name.replace("@", "_at_"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


def _retry(call, tries: int = 20):
    """call(), retried while SQLite reports the database locked (several writers at once)."""
    for attempt in range(tries):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - only lock contention is retried
            if "database is locked" not in str(err) or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
