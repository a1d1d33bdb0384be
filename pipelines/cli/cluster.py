"""`recstream cluster start|stop|status`: the standalone Flink session cluster from the PyFlink
wheel on 127.0.0.1 (pipelines/stream/cluster/standalone.py), left running between commands."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from features.errors import ConfigError

CLUSTER_DIR = "runs/flink"


def add(sub) -> None:
    c = sub.add_parser("cluster", help="a standalone Flink session cluster on 127.0.0.1 (JobManager + TaskManager)")
    c.add_argument("action", choices=("start", "stop", "status"))
    c.add_argument("--workdir", default=CLUSTER_DIR, help=f"its conf, logs and state (default {CLUSTER_DIR})")
    c.add_argument("--slots", type=int, default=2, help="start: task slots (default 2)")
    c.add_argument("--port", type=int, help="start: the REST port (default: a free one)")
    c.set_defaults(func=cluster)


def jobmanager_address(given: str | None) -> str:
    """--jobmanager, else the cluster `recstream cluster start` left in runs/flink."""
    from pipelines.daemons import address

    return address(given, Path(CLUSTER_DIR), "--jobmanager", "give host:port of a Flink cluster's REST endpoint, "
                                                               "or start one: recstream cluster start")


def cluster(args, extra) -> int:
    from pipelines import daemons

    if args.slots < 1:
        raise ConfigError("--slots", f"must be >= 1, got {args.slots}")
    return daemons.command(Path(args.workdir), "cluster", args.action, lambda folder: _start(folder, args), _status,
                           grace_s=30)


def _start(folder: Path, args):
    from pipelines.daemons import Daemon
    from pipelines.stream.cluster.standalone import FlinkCluster

    print("starting a JobManager and a TaskManager (about 10 s) ...", flush=True)
    c = FlinkCluster(folder, slots=args.slots, rest_port=args.port).start()
    print(f"cluster up at {c.address} ({args.slots} slots; web UI http://{c.address}; logs {c.log_dir})\n"
          f"  submit: recstream stream --target cluster --detached ...   stop: recstream cluster stop "
          f"--workdir {folder}")
    return Daemon("cluster", c.pids, c.address, str(c.log_dir), marker=str(c.log_dir))


def _status(state) -> None:
    from pipelines.stream.cluster.rest import rest

    o = rest(state.address, "/overview")
    print(f"cluster up at {state.address} (since {state.started}): {o['taskmanagers']} TaskManager, "
          f"{o['slots-total']} slots ({o['slots-available']} free)")
    for job in rest(state.address, "/jobs/overview")["jobs"]:
        start = datetime.fromtimestamp(job["start-time"] / 1000, timezone.utc).isoformat(timespec="seconds")
        print(f"  job {job['jid']}  {job['state']:<9} {job['name']}  started {start}")
