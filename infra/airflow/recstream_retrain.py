"""recstream's continuous training as an Airflow DAG: one window per run, never two runs at once.

Each run calls `recstream retrain --once` with the config in the Airflow Variable
``recstream_retrain_config`` (a path to a retrain.toml, e.g. infra/retrain.toml), on a worker that
has recstream installed (the trainer image, or `make setup`). The loop's own checkpoint is its
state: a failed or killed run is redone by the next one, so retries are safe. Copy this file into
the DAGs folder. tests/infra/test_retrain_schedules.py loads it with Airflow itself.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="recstream_retrain",
    description="One continuous-training window: data gate, train, model gate, promote (recstream retrain --once)",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the loop's checkpoint is shared state: one run at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["recstream"],
) as dag:
    BashOperator(
        task_id="retrain_one_window",
        bash_command="recstream retrain --config {{ var.value.recstream_retrain_config }} --once",
        execution_timeout=timedelta(minutes=50),
    )
