"""A real standalone Flink cluster from the PyFlink wheel: JobManager and TaskManager JVMs on free
localhost ports; a Python job submitted with `flink run`, polled and cancelled over REST; a failing job
reported with its Python error; everything stopped by PID with no process left over."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from features.schema import Event
from features.validate import parse_event
from pipelines.stream.cluster.distribution import FlinkClusterError, FlinkJobError, flink_version, java_home
from pipelines.stream.cluster.rest import (cancel_job, failed_on, failure_trace, last_failure, parse_address, rest,
                                          taskmanager_failure)
from pipelines.stream.cluster.standalone import FlinkCluster, process_group
from pipelines.stream.cluster.submit import attach_python, package_project, submit_python, submit_stream, write_stream_config
from pipelines.stream.connector import REPO

JOB = Path(__file__).parent / "flink_jobs" / "validate_lines.py"
NO_RESTART = {"restart-strategy.type": "none"}  # a failing test job fails at once instead of retrying
T0 = 1_704_067_200_000
LINES = [json.dumps({"event_id": "e1", "user_id": 1, "item_id": 2, "event_type": "click", "timestamp": T0}),
         json.dumps({"event_id": "e2", "user_id": 1, "item_id": 3, "event_type": "unknown", "timestamp": T0 + 1}),
         "{not json",
         json.dumps({"event_id": "e3", "user_id": 2, "item_id": 4, "event_type": "buy", "timestamp": T0 + 2})]


def test_parse_address_names_the_bad_value():
    assert parse_address("localhost:8081") == ("localhost", 8081)
    for bad in ("localhost", ":8081", "host:port", "host:0", "host:70000"):
        with pytest.raises(ValueError, match="host:port"):
            parse_address(bad)


def test_missing_java_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FlinkClusterError, match="Java not found.*JAVA_HOME"):
        java_home()
    cluster = FlinkCluster(tmp_path / "cluster")
    with pytest.raises(FlinkClusterError, match="Java not found"):
        cluster.start()
    assert cluster.procs == {}


def test_busy_port_is_named_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = FlinkCluster(tmp_path / "cluster", rest_port=port)
        with pytest.raises(FlinkClusterError, match=f"port {port} \\(rest.port\\) is busy"):
            cluster.start()
    assert cluster.procs == {}


def test_the_python_error_is_reported_whichever_failure_flink_lists_first():
    python = "org.apache.flink...PythonException\nTraceback (most recent call last):\n  File x\nValueError: planted"
    cancelled = "org.apache.flink.runtime.operators.coordination.TaskNotRunningException: Task is not running"
    assert failure_trace({"exceptionHistory": {"entries": [
        {"stacktrace": cancelled, "concurrentExceptions": [{"stacktrace": python}]}]}}) == python
    assert failure_trace({"exceptionHistory": {"entries": [{"stacktrace": cancelled}, {"stacktrace": python}]}}) == python
    assert failure_trace({"exceptionHistory": {"entries": [{"stacktrace": cancelled}]}}) == cancelled
    assert failure_trace({"root-exception": python}) == python and failure_trace({}) == ""


def test_the_taskmanager_log_gives_the_last_python_failure_of_the_job_s_own_tasks():
    def log(at, text):
        return f"2026-12-06 {at},423 INFO  org.apache.flink.runtime.taskexecutor.TaskExecutor [] - {text}\n"

    def deployed(at, job, slot, attempt):
        return [log(at, f"Receive slot request {slot} for job {job} from resource manager with leader id 0."),
                log(at, f"Received task validate (1/1)#0 ({attempt}), deploy into slot with allocation id {slot}.")]

    def failed(at, attempt, *trace):
        return [log(at, f"validate (1/1)#0 ({attempt}) switched from RUNNING to FAILED with failure cause:"),
                *(line + "\n" for line in trace)]

    python = ("java.lang.RuntimeException: Error received from SDK harness", "Traceback (most recent call last):",
              "  File x", "ValueError: planted")
    # job1 and its resubmission job2 share vertex v1; job2's slot s2 is reused by its restart (attempt _0_1)
    lines = [*deployed("20:00:00", "job1", "s1", "g1_v1_0_0"),
             *failed("20:00:01", "g1_v1_0_0", *python[:3], "ValueError: job1's"),
             *deployed("20:00:02", "job2", "s2", "g2_v1_0_0"),
             *failed("20:00:03", "g2_v1_0_0", *python[:3], "ValueError: first"),
             log("20:00:03", "Freeing task resources"),
             log("20:00:04", "Received task validate (1/1)#1 (g2_v1_0_1), deploy into slot with allocation id s2."),
             *failed("20:00:05", "g2_v1_0_1", *python),
             *failed("20:00:06", "g9_v1_0_0", *python[:3], "ValueError: a task of no slot of job2"),
             *failed("20:00:07", "g2_v1_0_1", "org.apache.flink.runtime.operators.coordination.TaskNotRunningException"),
             log("20:00:08", "Freeing task resources")]
    assert last_failure(lines, "job2") == "\n".join(python) + "\n"  # the last one of its own with a Python error
    assert last_failure(lines, "job1").endswith("ValueError: job1's\n")
    assert last_failure(lines, "job3") == "" and last_failure(lines[:-1], "job2").endswith("planted\n")
    assert failed_on({"exceptionHistory": {"entries": [
        {"taskManagerId": "tm-1", "concurrentExceptions": [{"taskManagerId": "tm-2"}, {}]}, {"taskManagerId": "tm-1"}]}}) \
        == ["tm-1", "tm-2"]


def test_package_project_ships_importable_packages(tmp_path):
    archive = package_project(tmp_path)
    names = zipfile.ZipFile(archive).namelist()
    assert {"features/validate.py", "pipelines/stream/driver.py", "pipelines/stream/cluster/submit.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Path entries come before the editable install's finder, so the import must come from the archive.
    code = f"import sys; sys.path.insert(0, {str(archive)!r}); import features.validate as v; print(v.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip().startswith(str(archive))


def test_submit_to_nothing_names_the_address(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(FlinkJobError, match=f"cannot reach the JobManager's REST API at 127.0.0.1:{port}"):
            submit_python(f"127.0.0.1:{port}", script=JOB)
    with pytest.raises(FileNotFoundError, match="nope.py"):
        submit_python("127.0.0.1:1", script=tmp_path / "nope.py")
    with pytest.raises(ValueError, match="exactly one"):
        submit_python("127.0.0.1:1", script=JOB, module="x")


def test_stream_config_round_trips_through_toml(tmp_path):
    import tomllib

    from features.sequence import SequencePolicy
    from pipelines.config import from_dict
    from pipelines.stream.config import StreamConfig

    cfg = StreamConfig(workdir=tmp_path / "run", kafka={"bootstrap_servers": "k1:9092,k2:9092", "topic": "ev",
                                                        "properties": {"security.protocol": "SASL_SSL"}},
                       follow=True, sequence=SequencePolicy(max_len=7, event_types=frozenset({"click", "buy"})))
    text = write_stream_config(cfg, tmp_path / "stream.toml").read_text()
    assert from_dict(StreamConfig, tomllib.loads(text)) == cfg


def test_cli_target_cluster_needs_a_reachable_jobmanager(tmp_path, capsys, monkeypatch):
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)  # no runs/flink here: no cluster `recstream cluster start` left
    base = ["stream", "--source", str(tmp_path), "--workdir", str(tmp_path)]
    assert main(base + ["--target", "cluster"]) == 2
    assert "give host:port of a Flink cluster's REST endpoint, or start one: recstream cluster start" in \
        capsys.readouterr().err
    assert main(base + ["--jobmanager", "127.0.0.1:8081"]) == 2  # --jobmanager alone: target is still local
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert main(base + ["--target", "cluster", "--jobmanager", f"127.0.0.1:{port}"]) == 1
    assert f"cannot reach the JobManager's REST API at 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = FlinkCluster(tmp_path_factory.mktemp("flink"), slots=2).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    return package_project(tmp_path_factory.mktemp("package"))


@pytest.mark.engine
def test_cluster_reports_one_taskmanager_with_its_slots(cluster):
    overview = rest(cluster.address, "/overview")
    assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
    assert overview["flink-version"] == flink_version()
    assert all(process_group(pid) for pid in cluster.pids.values())


@pytest.mark.engine
def test_failed_job_reports_the_python_error_and_the_log(cluster, shipped, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "part-0.jsonl").write_text("\n".join(LINES) + "\n")
    job = submit_python(cluster.address, script=JOB, py_files=[shipped], conf=NO_RESTART,
                        args=["--source", str(source), "--out", str(tmp_path / "out"), "--fail-on", "not json"])
    with pytest.raises(FlinkJobError) as failed:
        cluster.wait_for_job(job, "FINISHED", timeout_s=120)
    message = str(failed.value)
    assert f"job {job} ended FAILED" in message
    error = re.search(r"ValueError: planted failure on a record containing 'not json' \(features from (\S+)\)", message)
    assert error, message[:3000]
    assert "JobManager log:" in message and "standalonesession" in message
    # Where Flink's exception history lost the task's own failure, the TaskManager's log has it.
    assert error.group(0) in taskmanager_failure(cluster.address, job)
    # The worker imported the copy shipped with --pyFiles, not the checkout's (installed editable here).
    assert "python-files" in error.group(1) and not error.group(1).startswith(str(REPO / "features"))


@pytest.mark.engine
def test_attached_submit_reports_a_driver_that_fails_before_submitting(cluster, tmp_path):
    with pytest.raises(FlinkJobError) as failed:
        attach_python(cluster.address, script=JOB, args=["--source", str(tmp_path)], folder=tmp_path / "client")
    assert "`flink run` failed" in str(failed.value)
    assert "the following arguments are required: --out" in str(failed.value)  # the driver's own error
    assert not (tmp_path / "client").exists()  # the client's folder is cleaned up, its processes stopped


@pytest.mark.engine
def test_stream_job_on_the_cluster_feeds_the_online_store_from_kafka(cluster, tmp_path):
    """The issue's cluster test: the real stream job, submitted as `recstream stream --target cluster`
    does, reads the embedded broker and keeps the online store equal to the naive oracle."""
    pytest.importorskip("pipelines.stream", reason="pipelines/stream/__main__.py (the cluster entry) not there yet")
    from tests.conftest import naive_sequence
    from features.sequence import SequencePolicy
    from pipelines.embedded.broker import create_stream_topics, event_records, running_broker
    from pipelines.store.feature_store import apply, open_store, read_user_sequences
    from pipelines.stream.config import KafkaSettings, StreamConfig

    now_ms = T0 + 86_400_000
    types = ("click", "view", "buy", "cart")
    events = [{"event_id": f"u{u}-{i}", "user_id": u, "item_id": 10 * u + i, "event_type": types[i % 4],
               "timestamp": T0 + 1000 * i + u, "category_id": i % 3} for u in (1, 2, 3) for i in range(8)]
    lines = [json.dumps(e) for e in events] + [json.dumps(events[0]), "{not json"]  # a duplicate, a bad record
    parsed = [p for p in (parse_event(line, now_ms) for line in lines) if isinstance(p, Event)]
    policy = SequencePolicy(max_len=5)
    users = sorted({e.user_id for e in parsed})  # hashed IDs (features.ids)
    expected = {u: naive_sequence([e for e in parsed if e.user_id == u], policy.max_len) for u in users}
    store = open_store(tmp_path)
    apply(store, tmp_path)
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic="events", group_id="cluster-test")
        create_stream_topics(client, kafka)
        cfg = StreamConfig(workdir=tmp_path, kafka=kafka, follow=True, sequence=policy, examples=False,
                           report_every=1, now_ms=now_ms)
        driver = submit_stream(cluster.address, cfg)  # attached: the job's driver sums receipts in this client
        try:
            job = driver.job_id
            cluster.wait_for_job(job, "RUNNING", timeout_s=120)
            client.produce("events", event_records(lines, now_ms))
            deadline, online = time.monotonic() + 90, {}
            while time.monotonic() < deadline:
                online = read_user_sequences(store, users)
                if all(online[u] and online[u]["seq_length"] == expected[u]["seq_length"] for u in expected):
                    break
                time.sleep(0.5)
            got = {u: online[u] and {k: online[u][k] for k in expected[u]} for u in expected}
            assert got == expected, driver.output()[-3000:]
            # thread mode (the default): the job's Python runs inside the TaskManager's JVM (pemja)
            assert "pemja" in Path(f"/proc/{cluster.pids['taskmanager']}/maps").read_text()
            dead = [json.loads(r.value) for r in client.read(kafka.dead_letter_topic, 1)]
            assert [d["reason"] for d in dead] == ["malformed_json"]
            assert cancel_job(cluster.address, job)["state"] == "CANCELED"
            driver.wait(timeout_s=60)  # the driver ends with its job
        finally:
            driver.stop()
            client.close()
    assert process_group(driver.pid) == [], "the Flink client left processes behind"


@pytest.mark.engine
def test_stop_ends_every_process_of_the_cluster(cluster):
    pids = dict(cluster.pids)
    host, port = parse_address(cluster.address)
    cluster.stop()
    assert cluster.procs == {}
    for role, pid in pids.items():
        assert process_group(pid) == [], f"{role} (pid {pid}) left processes behind"
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()
