"""The pods the manifests run are locked down: not root, no privilege escalation, no capabilities,
the runtime's seccomp profile, a read-only root file system with writable emptyDirs where the
programs write; and the stream job's pods talk only to each other, the operator and their
services (a NetworkPolicy)."""
from __future__ import annotations

import tomllib

import pytest
import yaml

from pipelines.stream.connector import REPO

INFRA = REPO / "infra"


def _docs(name: str) -> dict:
    return {d["kind"]: d for d in yaml.safe_load_all((INFRA / name).read_text())}


def _pods() -> dict:
    flink, cron = _docs("flink-deployment.yaml"), _docs("retrain-cronjob.yaml")
    return {"FlinkDeployment": flink["FlinkDeployment"]["spec"]["podTemplate"]["spec"],
            "CronJob": cron["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]}


@pytest.mark.parametrize("kind", ["FlinkDeployment", "CronJob"])
def test_pods_run_unprivileged_on_a_read_only_root(kind):
    pod = _pods()[kind]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0 and ctx["seccompProfile"]["type"] == "RuntimeDefault"
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        c = container["securityContext"]
        assert c["allowPrivilegeEscalation"] is False and c["readOnlyRootFilesystem"] is True, container["name"]
        assert c["capabilities"]["drop"] == ["ALL"] and not c["capabilities"].get("add"), container["name"]
        writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty}
        assert "/tmp" in writable, f"{kind}: a read-only root needs an emptyDir on /tmp"


def test_the_stream_jobs_pods_are_confined_by_a_network_policy():
    docs = _docs("flink-deployment.yaml")
    policy, deployment = docs["NetworkPolicy"], docs["FlinkDeployment"]
    # The operator labels the job's JobManager and TaskManager pods app: <the deployment's name>.
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": deployment["metadata"]["name"]}}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    for rule in policy["spec"]["ingress"]:  # each rule names its peers: none is open to all
        assert rule.get("from"), rule
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    stream = tomllib.loads(docs["ConfigMap"]["data"]["stream.toml"])
    kafka_ports = {int(a.rpartition(":")[2]) for a in stream["kafka"]["bootstrap_servers"].split(",")}
    assert kafka_ports | {53, 6379, 443} <= egress_ports
    assert all(rule.get("to") or rule.get("ports") for rule in policy["spec"]["egress"])  # no allow-all rule
