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
    from pipelines.daemons import load

    if given:
        return given
    state = load(Path(CLUSTER_DIR))
    if state is None:
        raise ConfigError("--jobmanager", "give host:port of a Flink cluster's REST endpoint, or start one: "
                                          "recstream cluster start")
    return state.address


def cluster(args, extra) -> int:
    from pipelines import daemons
    from pipelines.stream.cluster.standalone import FlinkCluster

    folder = Path(args.workdir)
    state = daemons.load(folder)
    live = state is not None and all(daemons.running(state).values())
    if args.action == "start":
        if live:
            print(f"cluster already up at {state.address} (since {state.started})")
            return 0
        if args.slots < 1:
            raise ConfigError("--slots", f"must be >= 1, got {args.slots}")
        print("starting a JobManager and a TaskManager (about 10 s) ...", flush=True)
        c = FlinkCluster(folder, slots=args.slots, rest_port=args.port).start()
        daemons.save(folder, daemons.Daemon("cluster", c.pids, c.address, str(c.log_dir), marker=str(c.log_dir)))
        print(f"cluster up at {c.address} ({args.slots} slots; web UI http://{c.address}; logs {c.log_dir})\n"
              f"  submit: recstream stream --target cluster --detached ...   stop: recstream cluster stop "
              f"--workdir {folder}")
        return 0
    if state is None:
        print(f"no cluster was started from {folder}")
        return 0 if args.action == "stop" else 1
    if args.action == "stop":
        daemons.stop(state, grace_s=30)
        daemons.forget(folder)
        print(f"cluster at {state.address} stopped" if live else f"cluster at {state.address} was not running")
        return 0
    if not live:
        print(f"cluster at {state.address} is not (wholly) running: {daemons.running(state)}; logs {state.log}")
        return 1
    _status(state)
    return 0


def _status(state) -> None:
    from pipelines.stream.cluster.rest import rest

    o = rest(state.address, "/overview")
    print(f"cluster up at {state.address} (since {state.started}): {o['taskmanagers']} TaskManager, "
          f"{o['slots-total']} slots ({o['slots-available']} free)")
    for job in rest(state.address, "/jobs/overview")["jobs"]:
        start = datetime.fromtimestamp(job["start-time"] / 1000, timezone.utc).isoformat(timespec="seconds")
        print(f"  job {job['jid']}  {job['state']:<9} {job['name']}  started {start}")
