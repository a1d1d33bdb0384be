"""`recstream demo`: every component once, end to end, on the embedded defaults."""
from __future__ import annotations

from pathlib import Path


def add(sub) -> None:
    d = sub.add_parser("demo", help="run every component end to end on the embedded defaults")
    d.add_argument("--config", help="a TOML file of DemoConfig settings")
    d.add_argument("--workdir", help="run folder (default runs/demo)")
    d.add_argument("--dataset", help="synthetic | ml-latest-small | ml-1m | ml-100k | taobao | csv | parquet")
    d.add_argument("--path", help="the dataset's folder or file")
    d.add_argument("--users", type=int, help="synthetic users")
    d.add_argument("--steps", type=int, help="training steps")
    d.set_defaults(func=run)


def run(args, extra) -> int:
    from pipelines.cli.flags import given
    from pipelines.config import from_dict, merged, read_toml, to_dict
    from pipelines.demo import DemoConfig, run_demo

    data = merged(to_dict(DemoConfig()), read_toml(Path(args.config)) if args.config else {})
    flags = {"workdir": args.workdir, "dataset": args.dataset, "path": args.path,
             "synthetic": {"users": args.users}, "train": {"steps": args.steps}}
    cfg = from_dict(DemoConfig, merged(data, given(flags)))
    summary = run_demo(cfg)
    return 0 if summary.get("model_version") else 1

