"""The retrain schedules: the Kubernetes CronJob against the Kubernetes schemas, its config loaded
with RetrainConfig and its command with recstream's own parser; the Airflow DAG loaded by Airflow."""
from __future__ import annotations

import copy
import os
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipelines.cli import parser
from pipelines.config import from_dict
from pipelines.retrain.config import RetrainConfig
from pipelines.stream.connector import REPO

INFRA = REPO / "infra"
K8S = "1.33.0"  # the Kubernetes release whose schemas the manifest is checked against
AIRFLOW_VENV = Path(os.environ.get("RECSTREAM_AIRFLOW_VENV") or REPO / ".cache" / "airflow-venv")


@pytest.fixture(scope="module")
def docs() -> dict:
    return {d["kind"]: d for d in yaml.safe_load_all((INFRA / "retrain-cronjob.yaml").read_text())}


def test_the_cronjob_and_its_configmap_match_the_kubernetes_schemas(docs):
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S, strict=True)
    broken = copy.deepcopy(docs["CronJob"])
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'comand' was unexpected"):
        kubernetes_validate.validate(broken, K8S, strict=True)


def test_the_cronjob_runs_one_window_at_a_time_with_its_mounted_config(docs):
    spec = docs["CronJob"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"  # the loop's checkpoint is shared state
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = parser().parse_args(container["command"][1:])
    assert args.command == "retrain" and args.once and not args.follow
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert Path(args.config).parent.as_posix() in mounted
    volume = next(v for v in pod["volumes"] if v["name"] == mounted[Path(args.config).parent.as_posix()])
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    cfg = from_dict(RetrainConfig, tomllib.loads(docs["ConfigMap"]["data"][Path(args.config).name]))
    assert any(str(cfg.workdir).startswith(path) for path in mounted)  # the run folder is on a volume
    secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert "${KAFKA_JAAS_CONFIG}" in cfg.kafka.properties.values() and "KAFKA_JAAS_CONFIG" in secrets
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]


def test_the_shipped_retrain_toml_loads():
    cfg = from_dict(RetrainConfig, tomllib.loads((INFRA / "retrain.toml").read_text()))
    assert cfg.kafka is not None and cfg.window.size > cfg.window.min_records and cfg.models == ("ranker", "retriever")


def test_airflow_loads_the_dag():
    python = AIRFLOW_VENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"no Airflow environment at {AIRFLOW_VENV}: `make setup` (scripts/setup_airflow.sh) makes it")
    code = ("import sys; from airflow.dag_processing.dagbag import DagBag; "
            "bag = DagBag(dag_folder=sys.argv[1]); "
            "print(sorted(bag.dag_ids)); print(bag.import_errors); "
            "dag = bag.dags['recstream_retrain']; t = dag.get_task('retrain_one_window'); "
            "print(dag.max_active_runs, t.bash_command)")
    home = REPO / ".cache" / "airflow-home"
    got = subprocess.run([str(python), "-c", code, str(INFRA / "airflow")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    assert got.returncode == 0, got.stderr[-3000:]
    ids, errors, last = got.stdout.strip().splitlines()[-3:]
    assert ids == "['recstream_retrain']" and errors == "{}", got.stdout
    runs, command = last.split(" ", 1)
    assert runs == "1" and command.startswith("recstream retrain --config ") and command.endswith(" --once")
