"""A backfilled run with registered champions, built once per module and copied for each test."""
from __future__ import annotations

import shutil

import pytest

from pipelines.retrain.config import RetrainConfig, WindowPolicy
from tests.pipelines.retrain.runs import register_champions, small_run, train_champions


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """(a backfilled run, its champions' weights and configs, the later days as the stream emits
    them: accepted records, example records)."""
    work = tmp_path_factory.mktemp("base") / "run"
    accepted, examples = small_run(work)
    return work, train_champions(work), accepted, examples


@pytest.fixture
def run_copy(base_run, tmp_path):
    """A copy of the backfilled run with its champions registered in its own registry."""
    work, champions, accepted, examples = base_run
    copy = tmp_path / "run"
    shutil.copytree(work, copy)
    register_champions(copy, champions)
    return copy, accepted, examples


def loop_config(work, **overrides) -> RetrainConfig:
    window = overrides.pop("window", WindowPolicy(size=500, min_records=100, idle_s=0.3))
    return RetrainConfig(workdir=work, window=window, **overrides)
