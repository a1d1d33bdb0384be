"""infra/ cannot run here (no Docker, no Kubernetes), so it is parsed and checked: the job image
against the pinned Flink and Python, the FlinkDeployment against the operator's schema for the
fields it uses, the compose stack's services, ports and dependencies, and every stream config
the manifests pass against the stream job's own config class."""
from __future__ import annotations

import base64
import copy
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pipelines.config import ConfigError, from_dict
from pipelines.stream.cluster.distribution import flink_home, flink_version
from pipelines.stream.connector import REPO

INFRA = REPO / "infra"
PINNED = flink_version()  # e.g. "2.3.0"
MAJOR, MINOR = (int(x) for x in PINNED.split(".")[:2])
VENV_PYTHON = "/opt/venv/bin/python"


def stream_config_class():
    """The class `python -m pipelines.stream --config` loads its TOML into."""
    import importlib

    return importlib.import_module("pipelines.stream.__main__").StreamConfig


def load_stream_config(text: str, where: str, env: dict[str, str]):
    """The config as the job loads it, in the container's environment ``env``."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RECSTREAM_REDIS_URL",):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            cfg = from_dict(stream_config_class(), tomllib.loads(text))
        except (ConfigError, tomllib.TOMLDecodeError) as err:
            pytest.fail(f"{where}: not a valid stream job config: {err}")
    # On a cluster every TaskManager must write the same online store: a SQLite file in the
    # workdir would be one store per machine.
    assert cfg.online.kind == "redis", f"{where}: the cluster job should write Redis ([online] kind = \"redis\")"
    return cfg


# ---- the job image ---------------------------------------------------------------------------------

def dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def test_image_is_the_pinned_flink_with_python_311():
    text = dockerfile()
    base = re.search(r"^FROM\s+flink:(\S+)", text, re.M)
    assert base, "infra/Dockerfile must start FROM the official flink image"
    version = base.group(1).split("-")[0]
    assert version == PINNED, f"FROM flink:{base.group(1)} but apache-flink is pinned at {PINNED}"
    assert "java17" in base.group(1), "the pinned stack runs on Java 17 (ENVIRONMENT.md)"
    python = re.search(r"uv python install (\d+\.\d+)", text).group(1)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"{python}.0" in SpecifierSet(requires), f"image Python {python} is outside requires-python {requires}"
    assert f"VIRTUAL_ENV={VENV_PYTHON.rsplit('/bin', 1)[0]}" in text and "PATH=/opt/venv/bin:$PATH" in text


def test_image_copies_files_that_exist():
    for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+", dockerfile(), re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"infra/Dockerfile copies {part}, which is not in the repository"


def test_image_fetches_the_connector_jars_the_tests_run():
    """The image runs scripts/fetch_stream_deps.sh (the jars and sha256 values every test here uses) and
    points the job at them; it ships no other Kafka connector (the job would load two)."""
    from pipelines.stream.connector import CONNECTOR_JARS

    text = dockerfile()
    assert "COPY scripts/fetch_stream_deps.sh" in text
    run = re.search(r"^RUN JARS_ONLY=1 .*bash scripts/fetch_stream_deps.sh (\S+)$", text, re.M)
    assert run and re.search(rf"^ENV RECSTREAM_STREAM_DEPS={re.escape(run.group(1))}$", text, re.M)
    script = (REPO / "scripts" / "fetch_stream_deps.sh").read_text()
    assert all(f"|{jar}|" in script for jar in CONNECTOR_JARS)
    assert "flink-sql-connector-kafka" not in text and "/opt/flink/lib/" not in text


def test_the_image_carries_the_archive_a_submission_ships(tmp_path):
    """The image builds dist/recstream.zip with package_project, the function `recstream stream --target
    cluster` and the cluster tests submit with; it is reproducible, so both are the same bytes."""
    import hashlib

    from pipelines.stream.cluster.submit import package_project

    assert "package_project as p; p(Path('dist'))" in dockerfile()
    first = package_project(tmp_path / "a")
    source = REPO / "features" / "__init__.py"
    stat = source.stat()
    os.utime(source, (stat.st_atime, stat.st_mtime + 3600))  # a fresh checkout: other file times
    try:
        second = package_project(tmp_path / "b")
    finally:
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()


# ---- the FlinkDeployment ------------------------------------------------------------------------------

ANY = object()  # a mapping whose keys are not checked (a Pod template, labels)
ENUMS = {"upgradeMode": {"stateless", "savepoint", "last-state"}, "state": {"running", "suspended"},
         "imagePullPolicy": {"Always", "IfNotPresent", "Never"}}
RESOURCE = {"memory": str, "cpu": (int, float)}
# The operator's v1beta1 FlinkDeployment fields this project uses, with their types.
SPEC = {"image": str, "imagePullPolicy": str, "flinkVersion": str, "serviceAccount": str,
        "flinkConfiguration": {str: str},
        "jobManager": {"replicas": int, "resource": RESOURCE}, "taskManager": {"replicas": int, "resource": RESOURCE},
        "podTemplate": ANY,
        "job": {"jarURI": str, "entryClass": str, "args": [str], "parallelism": int, "upgradeMode": str,
                "state": str}}
REQUIRED = ("spec.image", "spec.flinkVersion", "spec.jobManager.resource.memory", "spec.jobManager.resource.cpu",
            "spec.taskManager.resource.memory", "spec.taskManager.resource.cpu", "spec.job.jarURI")


def schema_errors(value, schema, path: str) -> list[str]:
    """Type errors and unknown keys of value against a small schema (dicts, [type], {str: type}, types)."""
    if schema is ANY:
        return [] if isinstance(value, dict) else [f"{path}: expected a mapping"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value) for e in schema_errors(v, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict) and list(schema) == [str]:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        return [f"{path}.{k}: expected a string, got {type(v).__name__} {v!r} (quote it)"
                for k, v in value.items() if not isinstance(v, str)]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        errors = [f"{path}.{k}: not a field the operator knows (typo?)" for k in value if k not in schema]
        return errors + [e for k, v in value.items() if k in schema for e in schema_errors(v, schema[k], f"{path}.{k}")]
    if not isinstance(value, schema) or isinstance(value, bool):
        return [f"{path}: expected {getattr(schema, '__name__', schema)}, got {value!r}"]
    key = path.rsplit(".", 1)[-1]
    if key in ENUMS and value not in ENUMS[key]:
        return [f"{path}: {value!r} is not one of {sorted(ENUMS[key])}"]
    return []


def deployment_errors(doc: dict) -> list[str]:
    errors = []
    if doc.get("apiVersion") != "flink.apache.org/v1beta1" or doc.get("kind") != "FlinkDeployment":
        errors.append("apiVersion/kind must be flink.apache.org/v1beta1 FlinkDeployment")
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?", name):
        errors.append(f"metadata.name {name!r} must be a DNS-1035 label of at most 45 characters")
    errors += schema_errors(doc.get("spec"), SPEC, "spec")
    for dotted in REQUIRED:
        node = doc
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, ""):
            errors.append(f"{dotted} is required")
    return errors


@pytest.fixture(scope="module")
def manifests() -> dict:
    docs = list(yaml.safe_load_all((INFRA / "flink-deployment.yaml").read_text()))
    return {d["kind"]: d for d in docs}


def test_flink_deployment_matches_the_operator_schema(manifests):
    assert deployment_errors(manifests["FlinkDeployment"]) == []


def test_schema_check_catches_mistakes(manifests):
    for mutate, expected in [
        (lambda d: d["spec"]["taskManager"].update(memroy="1g"), "spec.taskManager.memroy: not a field"),
        (lambda d: d["spec"]["flinkConfiguration"].update({"taskmanager.numberOfTaskSlots": 2}), "quote it"),
        (lambda d: d["spec"]["job"].update(upgradeMode="latest"), "is not one of"),
        (lambda d: d["spec"].pop("image"), "spec.image is required"),
        (lambda d: d["spec"]["job"].update(args="-pym x"), "spec.job.args: expected a list")]:
        broken = copy.deepcopy(manifests["FlinkDeployment"])
        mutate(broken)
        assert any(expected in e for e in deployment_errors(broken)), expected


def test_flink_deployment_runs_the_stream_job_on_the_pinned_flink(manifests):
    spec = manifests["FlinkDeployment"]["spec"]
    assert spec["flinkVersion"] == f"v{MAJOR}_{MINOR}"
    job = spec["job"]
    jar = re.fullmatch(r"local:///opt/flink/opt/(flink-python-[\d.]+\.jar)", job["jarURI"])
    assert jar and (flink_home() / "opt" / jar.group(1)).is_file(), f"{job['jarURI']} is not this Flink's python jar"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    args = job["args"]
    assert args[args.index("-pym") + 1] == "pipelines.stream"
    assert args[args.index("-pyclientexec") + 1] == VENV_PYTHON
    # The archive the image builds with package_project in its /opt/recstream/dist.
    assert args[args.index("-pyfs") + 1] == "/opt/recstream/dist/recstream.zip"
    assert re.search(r"WORKDIR /opt/recstream\n(.*\n)*.*package_project as p; p\(Path\('dist'\)\)", dockerfile())
    conf = spec["flinkConfiguration"]
    assert conf["python.executable"] == VENV_PYTHON == conf["python.client.executable"]
    assert re.match(r"(s3|gs|hdfs|abfss?|oss)://", conf["execution.checkpointing.dir"]), "checkpoints must be durable"
    assert conf["execution.checkpointing.interval"]
    if job["upgradeMode"] == "last-state":  # the operator refuses last-state without HA
        assert conf["high-availability.type"] == "kubernetes" and conf["high-availability.storageDir"]
    plugins = [e["value"] for c in spec["podTemplate"]["spec"]["containers"] for e in c.get("env", [])
               if e["name"] == "ENABLE_BUILT_IN_PLUGINS"]
    assert plugins == [f"flink-s3-fs-presto-{PINNED}.jar"], "s3:// needs the S3 plugin of this Flink version"


def test_flink_deployment_config_comes_from_its_configmap(manifests):
    spec, configmap = manifests["FlinkDeployment"]["spec"], manifests["ConfigMap"]
    config_path = Path(spec["job"]["args"][spec["job"]["args"].index("--config") + 1])
    pod = spec["podTemplate"]["spec"]
    main = next(c for c in pod["containers"] if c["name"] == "flink-main-container")
    mount = next(m for m in main["volumeMounts"] if config_path.parent == Path(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]
    secrets = {e["name"]: "from-a-secret:6379" for e in main.get("env", []) if "valueFrom" in e}
    plain = {e["name"]: str(e["value"]) for e in main.get("env", []) if "value" in e}
    cfg = load_stream_config(configmap["data"][config_path.name], "the ConfigMap's stream.toml", {**plain, **secrets})
    assert getattr(cfg, "checkpoints", None) is None, "leave checkpoints to the cluster's durable checkpoint dir"
    # Every ${NAME} the config reads from the environment is set in the container.
    wanted = set(re.findall(r"\$\{(\w+)\}", configmap["data"][config_path.name]))
    assert wanted <= {e["name"] for e in main.get("env", [])}


# ---- the docker-compose session cluster ---------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yaml").read_text())


def test_compose_has_a_flink_session_cluster_from_the_job_image(compose, manifests):
    services = compose["services"]
    assert set(services) == {"jobmanager", "taskmanager", "kafka", "redis"}
    for name, role in (("jobmanager", "jobmanager"), ("taskmanager", "taskmanager")):
        flink = services[name]
        assert flink["command"] == role
        assert flink["image"] == manifests["FlinkDeployment"]["spec"]["image"]
        assert (INFRA / flink["build"]["context"] / flink["build"]["dockerfile"]).resolve() == INFRA / "Dockerfile"
        props = yaml.safe_load(flink["environment"]["FLINK_PROPERTIES"])
        spaced = [k for k, v in props.items() if " " in str(v)]
        assert not spaced, f"the flink image's entrypoint deletes spaces in FLINK_PROPERTIES values: {spaced}"
        assert props["jobmanager.rpc.address"] == "jobmanager"
        assert props["python.executable"] == VENV_PYTHON
        assert flink["environment"]["RECSTREAM_REDIS_URL"] == \
            f"redis:{_container_port(services['redis'], 6379)},password=${{REDIS_PASSWORD:?set REDIS_PASSWORD}}"
    assert "127.0.0.1:8081:8081" in services["jobmanager"]["ports"]


def test_compose_publishes_on_loopback_only_and_redis_needs_a_password(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every host interface"
    redis = compose["services"]["redis"]
    secret = "${REDIS_PASSWORD:?set REDIS_PASSWORD}"  # from the environment; compose refuses to start without it
    assert redis["command"][-2:] == ["--requirepass", secret] and redis["environment"]["REDISCLI_AUTH"] == secret


def _container_port(service: dict, port: int) -> int:
    assert any(p.split(":")[-1] == str(port) for p in service.get("ports", [])), f"port {port} is not published"
    return port


def test_compose_dependencies_wait_for_health(compose):
    services = compose["services"]
    for name, needs in (("taskmanager", {"jobmanager"}), ("jobmanager", {"kafka", "redis"})):
        depends = services[name]["depends_on"]
        assert set(depends) == needs
        for dep in needs:
            assert depends[dep]["condition"] == "service_healthy" and "healthcheck" in services[dep]
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in declared, f"{name} mounts undeclared volume {source}"
            elif (INFRA / source).resolve() == REPO / "runs":
                # the run root: made by the recstream commands on the host (gitignored), and by
                # Docker when missing, so a fresh clone need not have it
                assert "/runs/" in (REPO / ".gitignore").read_text(), "runs/ should be ignored"
            else:
                assert (INFRA / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_compose_kafka_is_a_single_kraft_node_reachable_inside_and_from_the_host(compose):
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be a base64 UUID"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == f"kafka:{listeners['INTERNAL'].lstrip(':')}"
    host_port = advertised["HOST"].split(":")[1]
    assert f"127.0.0.1:{host_port}:{host_port}" in kafka["ports"] and listeners["HOST"] == f":{host_port}"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1  # one broker: replication factor 1


def test_compose_stream_config_is_valid_and_inside_the_mounted_runs(compose):
    flink = compose["services"]["jobmanager"]
    mounts = dict(v.split(":")[:2] for v in flink["volumes"])
    config = INFRA / next(src for src, dst in mounts.items() if dst == "/opt/recstream/conf/stream.toml")
    cfg = load_stream_config(config.read_text(), str(config), {k: str(v) for k, v in flink["environment"].items()})
    runs = Path(mounts["../runs"])
    for name in ("source", "workdir", "dead_letter", "examples_dir", "checkpoints"):
        if getattr(cfg, name, None) is not None:
            assert Path(getattr(cfg, name)).is_relative_to(runs), f"{name} is outside the mounted {runs}"
    if getattr(cfg, "kafka", None) is not None:
        advertised = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"INTERNAL://{cfg.kafka.bootstrap_servers}" in advertised.split(",")


def test_image_builds_the_job_s_jvm_operators_with_the_setup_s_script():
    """The job adds recstream-stream-ops.jar from RECSTREAM_STREAM_DEPS (pipelines.stream.batches): the
    image compiles it with scripts/build_stream_ops.sh, against the image's own Flink jars."""
    from pipelines.stream.batches import OPS_JAR

    text = dockerfile()
    assert re.search(r"^RUN bash scripts/build_stream_ops.sh (\S+) (\S+)$", text, re.M)
    deps = re.search(r"^ENV RECSTREAM_STREAM_DEPS=(\S+)$", text, re.M).group(1)
    assert re.search(rf"^COPY --from=ops \S+/{OPS_JAR} {re.escape(deps)}/{OPS_JAR}$", text, re.M)
    assert re.search(r"^COPY --from=flink:(\S+) /opt/flink/lib ", text, re.M).group(1) == f"{PINNED}-scala_2.12-java17"
