"""The continuous-training loop: window by window, gate the data, evaluate, train, gate the model, promote.

For each window (pipelines.retrain.window):
1. its accepted behaviors join the log (WORKDIR/retrain/log/), deduplicated by event_id;
2. its examples are parsed, repeats dropped (at-least-once topics), and the data gate
   (pipelines.gates.window: the GX suite, replays, unreadable records, drift) decides; a failed
   window is quarantined with its verdict and not trained on;
3. each model line (pipelines.retrain.models) evaluates its champion on the whole window, trains
   a candidate on the earlier part and gates it against the champion on the later part;
4. a passing candidate is registered in MLflow with its window's positions, gates, metrics and
   checkpoint, and promoted (alias champion); a retriever's users' interest vectors are written
   to Feast; a failing one is rejected and its line goes back to the champion's checkpoint;
5. the checkpoint (positions, seen examples, drift reference, both lines' DCP state) commits
   the window. A kill -9 anywhere before that redoes the window from the previous checkpoint;
   registration is idempotent (a version is found by its loop and window tags).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.labels import next_item_point_in_time
from features.pit import sort_log
from pipelines.config import to_dict
from pipelines.gates.window import profile, window_gate
from pipelines.retrain.config import RetrainConfig
from pipelines.retrain.evaluate import Log
from pipelines.retrain.models import DEFAULT_CONFIGS, ModelLine, WindowResult
from pipelines.retrain.records import Seen, parse_behaviors, parse_examples, trainable
from pipelines.retrain.state import LoopState, Store
from pipelines.retrain.window import Window, read_window
from trainers.distributed import process_group
from trainers.registry import Registry

REFERENCE_VALUES = 20_000  # the drift reference keeps at most this many values per feature


class Loop:
    """The loop over one run folder; use as a context manager (it holds a process group and the learners)."""

    def __init__(self, cfg: RetrainConfig, say: Callable[[str], None] = print,
                 observe: Callable[..., dict] | None = None):
        """``observe(window, examples, behaviors, log)``, if given, sees every window that passed its
        data gate before the models train on it (e.g. to score other models on the same rows); what
        it returns goes into the window's record under "observed"."""
        self.cfg, self.say, self.observe = cfg, say, observe
        self.store = Store(cfg.folder, cfg.keep_checkpoints)
        self.registry = Registry(cfg.registry, cfg.tracking_uri)
        self.stopping = False
        self._stack = ExitStack()

    def __enter__(self) -> "Loop":
        self._stack.enter_context(process_group())
        latest = self.store.latest()
        self.state = self.store.read(latest) if latest else LoopState()
        saved = self.state.lines
        self.lines = {}
        for kind in self.cfg.models:
            line = ModelLine.open(kind, getattr(self.cfg, kind), self.registry, self.cfg.workdir,
                                  saved.get(kind) if latest else None)
            self._stack.callback(line.close)
            self.lines[kind] = line
        if latest:
            for kind, line in self.lines.items():
                line.learner.restore(latest / kind)
        base = _table(self.cfg.workdir / "offline" / "behavior_log")
        deltas = self.store.log_tables(self.state.window)
        self.log = sort_log(pa.concat_tables([base, *deltas]) if deltas else base)
        self.known = set(self.log.column("event_id").to_pylist())
        if not latest:
            self._commit()  # window 0: the lines as they start, the point every rejection returns to
        self.say(f"retrain: loop {self.state.loop_id} at window {self.state.window}, log of {self.log.num_rows:,} "
                 f"behaviors; champions {self._champions()}")
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def run(self, follow: bool = False, max_windows: int | None = None) -> list[dict]:
        """Process windows until the streams hold no full window (or, following, until stopped by
        SIGTERM / request_stop), or ``max_windows`` are done. Returns their records."""
        done = []
        while not self.stopping and (max_windows is None or len(done) < max_windows):
            window = read_window(self.cfg, self.state.window + 1, self.state.positions, follow=follow,
                                 stop=lambda: self.stopping)
            if window is None:
                break
            done.append(self.process(window))
        if not done:
            self.say("retrain: the streams hold no full window yet; nothing to do")
        return done

    def request_stop(self, *_args) -> None:
        """Finish the window in progress (or abandon one still being read), checkpoint, and return."""
        self.stopping = True

    def process(self, window: Window) -> dict:
        """Gate, evaluate, train, gate and promote one window, then commit it; returns its record."""
        failpoint("after_read", window.index)
        behaviors, b_repeats, b_bad = parse_behaviors(window.accepted if self.cfg.examples == "topic"
                                                      else window.primary, self.known)
        self.store.write_log(window.index, behaviors)
        self.log = sort_log(pa.concat_tables([self.log, behaviors]))
        log = Log(self.log)
        seen = Seen(self.cfg.dedup_horizon_ms, self.state.seen)
        parsed = self._examples(window, behaviors, seen)
        frame = self._gate_frame(parsed.table, log)
        verdict, drift = window_gate(frame, parsed.raw, parsed.duplicates, parsed.unreadable, self._reference(),
                                     self.cfg.bounds, self.cfg.data_suite)
        record = {"window": window.index, "loop": self.state.loop_id, "closed_by": window.closed_by,
                  "opened_at": window.opened_at, "closed_at": window.closed_at, "start": window.start,
                  "end": window.end, "records": parsed.raw, "duplicates": parsed.duplicates,
                  "unreadable": parsed.unreadable, "behaviors": behaviors.num_rows,
                  "behavior_repeats": b_repeats, "behavior_unreadable": b_bad, "data_gate": _gate(verdict),
                  "drift": drift, "models": {}}
        record["times"] = {"examples": _range(parsed.table, "timestamp"), "labels": _range(parsed.table, "label_ms"),
                           "behaviors": _range(behaviors, "timestamp")}
        if verdict.passed:
            examples = trainable(parsed.table)
            if self.observe is not None:
                record["observed"] = self.observe(window, examples, behaviors, log)
            for kind, line in self.lines.items():
                record["models"][kind] = self._train(kind, line, window, examples, behaviors, log, verdict, drift)
                if record["models"][kind].get("decision") == "promoted" and kind == "retriever":
                    record["models"][kind].update(self._publish(line, behaviors))
            seen.digests.update(parsed.digests)
            self.state.newest_ms = max(self.state.newest_ms, _max(parsed.table, "timestamp"))
            self._extend_reference(frame)
        else:
            record["quarantine"] = str(self.store.quarantine(window.index, window.primary,
                                                             {"window": window.index, **_gate(verdict), "drift": drift,
                                                              "start": window.start, "end": window.end}))
            self.say(f"retrain: window {window.index} QUARANTINED ({', '.join(verdict.reasons)}): "
                     f"{'; '.join(verdict.failures)[:300]}")
        seen.forget_before(self.state.newest_ms)
        self.state.seen, self.state.positions, self.state.window = seen.digests, window.end, window.index
        self.store.record({**record, "committed_at": time.time()})
        self._commit()
        failpoint("after_checkpoint", window.index)
        self._commit_offsets(window)
        return record

    def _train(self, kind: str, line: ModelLine, window: Window, examples: pa.Table, behaviors: pa.Table, log: Log,
               verdict, drift: dict) -> dict:
        policy, seed = self.cfg.gate, self.cfg.seed + window.index
        result = line.window(examples, behaviors, log, self.cfg.window.holdout_fraction, policy, seed,
                             self.cfg.window.epochs)
        failpoint(f"after_train_{kind}", window.index)
        entry = {"online": result.online, "trained_rows": result.trained_rows, "holdout_rows": result.holdout_rows,
                 "gate": _gate(result.gate), "figures": result.figures,
                 "loss": float(np.mean(result.losses)) if result.losses else None}
        if result.gate.passed:
            entry.update(self._promote(kind, line, window, result, verdict, drift))
        else:
            self.registry.reject(kind, None, by=self._by(window), why="; ".join(result.gate.failures)[:500])
            line.learner.restore(self.store.latest() / kind)  # back to the champion's weights and optimizer
            entry["decision"] = "rejected"
            self.say(f"retrain: window {window.index} {kind} candidate REJECTED ({', '.join(result.gate.reasons)})")
        return entry

    def _promote(self, kind: str, line: ModelLine, window: Window, result: WindowResult, verdict, drift) -> dict:
        # A window redone after a crash is found by its loop, number and positions (a redo that read
        # the partitions in another interleaving is another window, and another version).
        tags = {"loop": self.state.loop_id, "window": str(window.index), "kind": kind, "span": _span(window)}
        version = self.registry.find(kind, loop=self.state.loop_id, window=str(window.index), span=tags["span"])
        if version is None:
            with _scratch(self.cfg.folder) as tmp:
                line.learner.save(tmp / "checkpoint")
                version = self.registry.register(
                    kind, result.candidate,
                    {"config": to_dict(line.cfg), "window": window.index, "start": window.start, "end": window.end,
                     "data_gate": _gate(verdict), "drift": drift, "model_gate": _gate(result.gate),
                     "figures": result.figures, "online": result.online, "parent": line.champion, **line.meta()},
                    files={"checkpoint": tmp / "checkpoint"}, tags=tags, metrics=_numbers(result.figures),
                    by=self._by(window), why="data and model gates passed")
        failpoint(f"after_register_{kind}", window.index)
        if self.registry.champion(kind) != version:
            self.registry.promote(kind, version, by=self._by(window), why="data and model gates passed")
        line.champion = version
        out = {"decision": "promoted", "version": version, "promoted_at": time.time()}
        self.say(f"retrain: window {window.index} {kind} version {version} PROMOTED "
                 f"(holdout {_summary(result.figures)})")
        return out

    def _publish(self, line: ModelLine, behaviors: pa.Table) -> dict:
        """The promoted retriever's users' interest vectors into Feast (all users, or this window's)."""
        from pipelines.retrain.publish import publish_interests

        source = self.log if self.cfg.interest_users == "all" else behaviors
        n = publish_interests(self.cfg.workdir, line.learner.state_dict(), line.cfg, line.champion,
                              source.column("user_id").to_numpy(), self.log)
        return {"interests_published": n, "interests_at": time.time()}

    def _examples(self, window: Window, behaviors: pa.Table, seen: Seen):
        if self.cfg.examples == "topic":
            return parse_examples(window.primary, seen)
        from pipelines.retrain.records import Parsed

        policy = dataclasses.replace(self.cfg.labels, seed=self.cfg.labels.seed + window.index)
        table = next_item_point_in_time(self.log, behaviors, policy)
        full = pa.table({**{n: table.column(n).cast(pa.int64()) for n in table.column_names},
                         "label_ms": table.column("timestamp")})
        return Parsed(full, raw=len(window.primary), duplicates=0, unreadable=0)

    def _gate_frame(self, table: pa.Table, log: Log) -> pa.Table:
        users = table.column("user_id").fill_null(-1).to_numpy()
        times = table.column("timestamp").fill_null(0).to_numpy()
        behind = np.maximum(self.state.newest_ms - times, 0) if self.state.newest_ms else np.zeros(len(times))
        return table.append_column("seq_length", pa.array(log.history_lengths(users, times), pa.int64())) \
            .append_column("behind_ms", pa.array(behind.astype(np.int64)))

    def _reference(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.state.reference.items()}

    def _extend_reference(self, frame: pa.Table) -> None:
        for name, values in profile(frame).items():
            old = list(self.state.reference.get(name, []))
            self.state.reference[name] = (old + np.asarray(values).tolist())[-REFERENCE_VALUES:]

    def _commit(self) -> None:
        self.state.lines = {kind: line.saved() for kind, line in self.lines.items()}
        self.store.write(self.state, {k: line.learner for k, line in self.lines.items()},
                         before_commit=lambda: failpoint("mid_checkpoint", self.state.window))

    def _commit_offsets(self, window: Window) -> None:
        if self.cfg.kafka is None:
            return
        from pipelines.retrain.source import open_reader

        for stream, positions in window.end.items():
            reader = open_reader(self.cfg, stream, positions)
            try:
                reader.commit(positions)
            finally:
                reader.close()

    def _champions(self) -> dict:
        return {kind: line.champion for kind, line in self.lines.items()}

    def _by(self, window: Window) -> str:
        return f"retrain loop {self.state.loop_id} window {window.index}"


def run_retrain(cfg: RetrainConfig, follow: bool = False, max_windows: int | None = None,
                say: Callable[[str], None] = print, observe: Callable[..., dict] | None = None) -> list[dict]:
    """Run the loop: every full window the streams hold (``max_windows`` at most; 1 for a cron
    job), or, following, until stopped. SIGTERM and Ctrl-C finish the window in progress (or
    abandon one still being read), checkpoint and return."""
    with Loop(cfg, say, observe) as loop:
        previous = {sig: signal.signal(sig, loop.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return loop.run(follow=follow, max_windows=max_windows)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def failpoint(name: str, window: int) -> None:
    """Tests kill the loop here (kill -9 of itself) when $RECSTREAM_FAILPOINT is ``name:window``."""
    if os.environ.get("RECSTREAM_FAILPOINT") == f"{name}:{window}":
        os.kill(os.getpid(), signal.SIGKILL)


def _table(path: Path) -> pa.Table:
    import pyarrow.dataset as ds

    from features.errors import MissingInput

    if not path.is_dir():
        raise MissingInput(path, f"the loop extends a backfilled run's behavior log: run `recstream backfill "
                                 f"--output {path.parent}` (or `recstream demo`) first")
    return ds.dataset(path, format="parquet").to_table()


class _scratch:
    """A temporary folder inside the loop's own folder (same file system as its checkpoints)."""

    def __init__(self, folder: Path):
        import tempfile

        self.path = Path(tempfile.mkdtemp(prefix=".scratch-", dir=folder))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _span(window: Window) -> str:
    """A short digest of where the window started and ended in every stream."""
    import hashlib
    import json

    body = json.dumps({"start": window.start, "end": window.end}, sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


def _gate(result) -> dict:
    return {"passed": result.passed, "reasons": result.reasons, "failures": result.failures,
            "checked": result.checked}


def _range(table: pa.Table, column: str) -> list[int] | None:
    """[min, max] of a column (event times, ms), None when it holds no value."""
    values = table.column(column).drop_null() if column in table.column_names else pa.array([], pa.int64())
    return [int(pc.min(values).as_py()), int(pc.max(values).as_py())] if len(values) else None


def _max(table: pa.Table, column: str) -> int:
    values = table.column(column).drop_null()
    return int(pc.max(values).as_py()) if len(values) else 0


def _numbers(figures: dict) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and np.isfinite(v)}


def _summary(figures: dict) -> str:
    keys = [k for k in ("auc_candidate", "auc_champion", "recall@50_candidate", "recall@50_champion") if k in figures]
    return ", ".join(f"{k} {figures[k]:.4f}" for k in keys) or "no figures"


__all__ = ["DEFAULT_CONFIGS", "Loop", "run_retrain"]
