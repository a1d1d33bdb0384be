"""Thin Beam adapters over features/: validation, the sequence combiner, per-user tables."""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from features import sequence
from features.labels import LabelPolicy, build_examples
from features.schema import Event, Rejection
from features.sequence import SequencePolicy
from features.validate import parse_event

NAMESPACE = "recstream"
REJECTED = "rejected"


class ValidateFn(beam.DoFn):
    """Raw record -> Event (main output) | Rejection (tagged 'rejected'), counted."""

    def __init__(self, now_ms: int | None = None):
        self.now_ms = now_ms
        self.read = Metrics.counter(NAMESPACE, "read")
        self.accepted = Metrics.counter(NAMESPACE, "accepted")

    def process(self, raw):
        self.read.inc()
        result = parse_event(raw, self.now_ms)
        if isinstance(result, Rejection):
            Metrics.counter(NAMESPACE, f"rejected.{result.reason}").inc()
            yield beam.pvalue.TaggedOutput(REJECTED, result._asdict())
        else:
            self.accepted.inc()
            yield result


class SequenceCombineFn(beam.CombineFn):
    """create/add/merge/extract mapped onto features.sequence."""

    def __init__(self, policy: SequencePolicy):
        self.policy = policy

    def create_accumulator(self):
        return sequence.empty()

    def add_input(self, state, event: Event):
        return sequence.add(state, event, self.policy)

    def merge_accumulators(self, states):
        return sequence.merge(states, self.policy)

    def extract_output(self, state):
        return sequence.finalize(state, self.policy)


def user_feature_row(keyed) -> dict:
    user_id, features = keyed
    ts = datetime.fromtimestamp(features["last_event_ms"] / 1000, tz=timezone.utc)
    return {"user_id": user_id, **features, "feature_ts": ts}


class UserTablesFn(beam.DoFn):
    """One user's deduplicated events -> behavior-log rows (main) and examples (tagged)."""

    EXAMPLES = "examples"

    def __init__(self, sequence_policy: SequencePolicy, label_policy: LabelPolicy):
        self.sequence_policy = sequence_policy
        self.label_policy = label_policy
        self.duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self.examples = Metrics.counter(NAMESPACE, "examples")

    def process(self, keyed, catalog=None):
        user_id, copies = keyed[0], list(keyed[1])
        unique: dict[str, Event] = {}
        for e in copies:
            old = unique.get(e.event_id)
            if old is not None:
                self.duplicates.inc()
            if old is None or sequence.behavior(e) > sequence.behavior(old):
                unique[e.event_id] = e
        events = list(unique.values())
        # The log dedups like the sequence state: among the policy's types only, so a copy of
        # another type (say an impression with the same event_id) cannot hide the behavior.
        log: dict[str, sequence.Behavior] = {}
        for e in copies:
            if e.event_type in self.sequence_policy.event_types:
                b = sequence.behavior(e)
                if e.event_id not in log or b > log[e.event_id]:
                    log[e.event_id] = b
        for b in log.values():
            yield {"user_id": user_id, "timestamp": b[0], "event_id": b[1], "item_id": b[2],
                   "category_id": b[3], "event_type_code": b[4]}
        items, cats = catalog if catalog is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
        rows = build_examples(events, self.label_policy, items, cats)
        self.examples.inc(len(rows))
        for user, item, cat, ts, label in rows:
            yield beam.pvalue.TaggedOutput(
                self.EXAMPLES, {"user_id": user, "item_id": item, "category_id": cat, "timestamp": ts, "label": label}
            )
