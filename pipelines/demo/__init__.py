"""The demo: every component once, end to end, on the embedded defaults (`recstream demo`).

    config.py   DemoConfig: every stage's settings in one typed config
    run.py      run_demo and its stages: ingest, backfill, embed, feature store, train, stream
    stream.py   the stream stage: the held-back events through the embedded broker and the job
    report.py   the closing summary
"""
from pipelines.demo.config import DemoConfig
from pipelines.demo.run import run_demo

__all__ = ["DemoConfig", "run_demo"]
