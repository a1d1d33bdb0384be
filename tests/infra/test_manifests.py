"""Every Kubernetes manifest against the Kubernetes schemas (the FlinkDeployment against the
operator's, in test_infra.py), and the pieces that must fit together: the service account, the
shared run volume, the metrics port, the topics Job's command, and the settings a submitted job
leaves to its cluster."""
from __future__ import annotations

import zipfile

import kubernetes_validate
import pytest
import yaml

from pipelines.cli import parser
from pipelines.stream.cluster.distribution import flink_home
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.connector import REPO
from pipelines.stream.driver import job_settings

INFRA = REPO / "infra"
K8S = "1.33.0"
MANIFESTS = ("rbac.yaml", "redis.yaml", "topics-job.yaml", "flink-deployment.yaml", "retrain-cronjob.yaml")


def docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((INFRA / name).read_text()))


def kind(name: str, wanted: str) -> dict:
    return next(d for d in docs(name) if d["kind"] == wanted)


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_kubernetes_object_matches_the_schemas(name):
    checked = 0
    for doc in docs(name):
        if doc["apiVersion"].startswith("flink.apache.org"):
            continue  # the operator's CRD: test_infra.py
        kubernetes_validate.validate(doc, K8S, strict=True)
        checked += 1
    assert checked


def test_the_jobs_pods_have_their_service_account_and_the_shared_run_volume():
    deployment = kind("flink-deployment.yaml", "FlinkDeployment")["spec"]
    assert kind("rbac.yaml", "ServiceAccount")["metadata"]["name"] == deployment["serviceAccount"]
    binding = kind("rbac.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == kind("rbac.yaml", "Role")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": deployment["serviceAccount"]}]
    rules = {(r, v) for rule in kind("rbac.yaml", "Role")["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("pods", "create"), ("pods", "delete"), ("configmaps", "update"), ("leases", "update")} <= rules
    claim = kind("rbac.yaml", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the JobManager and every TaskManager mount it
    pod = deployment["podTemplate"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    runs = volumes[mounts["/opt/recstream/runs"]]
    assert runs["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    config = yaml.safe_load((INFRA / "flink-deployment.yaml").read_text().split("---")[0])["data"]["stream.toml"]
    assert 'workdir = "/opt/recstream/runs/' in config  # the job's run folder is on that volume
    cron = kind("retrain-cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert claim["metadata"]["name"] in {v.get("persistentVolumeClaim", {}).get("claimName") for v in cron["volumes"]}


def test_prometheus_scrapes_the_reporter_flink_ships():
    deployment = kind("flink-deployment.yaml", "FlinkDeployment")["spec"]
    conf = deployment["flinkConfiguration"]
    factory = conf["metrics.reporter.prom.factory.class"]
    jars = list((flink_home() / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
    assert len(jars) == 1 and factory.replace(".", "/") + ".class" in zipfile.ZipFile(jars[0]).namelist()
    port = int(conf["metrics.reporter.prom.port"])
    container = deployment["podTemplate"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    assert deployment["podTemplate"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    policy = kind("flink-deployment.yaml", "NetworkPolicy")["spec"]
    assert any(p["port"] == port for rule in policy["ingress"] for p in rule.get("ports", []))


def test_the_topics_job_runs_a_command_recstream_parses():
    container = kind("topics-job.yaml", "Job")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["recstream"]
    args, extra = parser().parse_known_args(container["args"])
    assert not extra and args.command == "topics" and args.action == "create" and args.partitions >= 1
    stream_toml = yaml.safe_load((INFRA / "flink-deployment.yaml").read_text().split("---")[0])["data"]["stream.toml"]
    assert f'bootstrap_servers = "{args.kafka}"' in stream_toml  # the Kafka the job reads
    props = dict(p.split("=", 1) for p in args.kafka_property)
    assert props["sasl.jaas.config"] == "${KAFKA_JAAS_CONFIG}"
    assert {e["name"] for e in container["env"]} == {"KAFKA_JAAS_CONFIG"}
    converted = KafkaSettings(bootstrap_servers=args.kafka, properties=props)
    assert converted.properties["security.protocol"] == "SASL_SSL"


def test_a_submitted_job_leaves_restarts_and_python_to_its_cluster(tmp_path):
    cfg = StreamConfig(workdir=tmp_path, source=tmp_path)
    local, submitted = job_settings(cfg, submitted=False), job_settings(cfg, submitted=True)
    assert local["restart-strategy.type"] == "none" and "python.executable" in local
    assert local["rest.bind-address"] == "127.0.0.1"
    for key in ("restart-strategy.type", "python.executable", "rest.bind-address"):
        assert key not in submitted, key
    assert submitted["python.execution-mode"] == cfg.python_mode
