"""The stream job as a program: ``python -m pipelines.stream --config stream.toml``.

What a Flink cluster runs (``flink run -pym pipelines.stream``): the TOML holds
StreamConfig's keys (unknown keys are errors; see docs/streaming.md). The job goes to
whatever environment Flink provides (the cluster under ``flink run``, else a local
mini-cluster). Attached (default): this program stays the job's driver, sums the count
receipts the job's functions send back (they reach it where TaskManagers can reach
127.0.0.1 here; elsewhere counts are Flink metrics only), prints them as JSON when the job
ends, and cancels the job on Ctrl-C. ``--detach``: print the job ID and return.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.config import load_toml
from pipelines.progress import quiet_libraries
from pipelines.stream.config import StreamConfig
from pipelines.stream.graph import build, make_output_dirs
from pipelines.stream.driver import claim, environment, is_submitted, run_here
from pipelines.stream.lock import JobLock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.stream", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a TOML file of StreamConfig settings")
    p.add_argument("--detach", action="store_true", help="submit the job, print its ID and return")
    args = p.parse_args(argv)
    quiet_libraries()
    cfg = load_toml(StreamConfig, Path(args.config))
    if not args.detach:
        lock = None if is_submitted() else JobLock(cfg)  # run here: one job per input and store
        if lock is not None:
            claim(lock, cfg)
        try:
            print(json.dumps(run_here(cfg), indent=2), flush=True)
        finally:
            if lock is not None:
                lock.release()
        return 0
    make_output_dirs(cfg)
    env, ledger = environment(cfg)
    build(env, cfg, ledger, receipts=None)
    client = env.execute_async("recstream stream")
    print(json.dumps({"job_id": str(client.get_job_id())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
