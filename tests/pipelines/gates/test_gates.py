"""Great Expectations gates: good tables pass, each kind of bad table fails and says why."""
from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.gates.model import model_gate
from pipelines.gates.tables import validate_table

pytestmark = pytest.mark.engine
T = 1_704_067_200_000


def examples(**overrides):
    cols = {"user_id": [1, 2, 3, 4], "item_id": [5, 6, 7, 8], "category_id": [0, 0, 1, 1],
            "timestamp": [T, T + 1, T + 2, T + 3], "label": [0, 1, 0, 1]}
    cols.update(overrides)
    return pa.table(cols)


def test_good_examples_pass():
    result = validate_table(examples(), "examples")
    assert result.passed and not result.failures and result.checked >= 5


@pytest.mark.parametrize("overrides, named", [
    ({"label": [0, 1, 2, 1]}, "expect_column_values_to_be_in_set(label)"),
    ({"item_id": [5, None, 7, 8]}, "expect_column_values_to_not_be_null(item_id)"),
    ({"timestamp": [T, 5, T, T]}, "expect_column_values_to_be_between(timestamp)"),
    ({"label": [0, 0, 0, 0]}, "expect_column_mean_to_be_between(label)"),
])
def test_bad_examples_fail_naming_the_expectation(overrides, named):
    result = validate_table(examples(**overrides), "examples")
    assert not result.passed
    assert any(f.startswith(named) for f in result.failures), result.failures


def test_sequence_table_gate_checks_caps_and_unique_users():
    good = pa.table({"user_id": [1, 2], "seq_length": [3, 50], "last_event_ms": [T, T]})
    assert validate_table(good, "user_sequence", max_len=50).passed
    bad = pa.table({"user_id": [1, 1], "seq_length": [3, 51], "last_event_ms": [T, T]})
    result = validate_table(bad, "user_sequence", max_len=50)
    assert not result.passed
    assert any("unique(user_id)" in f for f in result.failures)
    assert any("between(seq_length)" in f for f in result.failures)


def test_empty_table_fails_and_unknown_suite_is_an_error():
    assert not validate_table(examples().slice(0, 0), "examples").passed
    with pytest.raises(ValueError, match="no expectation suite"):
        validate_table(examples(), "nope")


def test_model_gate():
    assert model_gate({"auc": 0.7, "baseline_auc": 0.6}, min_auc=0.55, min_lift=0.05).passed
    failed = model_gate({"auc": 0.6, "baseline_auc": 0.62}, min_auc=0.65, min_lift=0.0)
    assert not failed.passed and len(failed.failures) == 2
    assert not model_gate({"auc": float("nan"), "baseline_auc": 0.5}, 0.5, 0.0).passed
