"""A tiny PyFlink job for the cluster tests: JSON-lines files -> features.validate -> one text line per record.

    flink run -py validate_lines.py --pyFiles recstream.zip --source IN --out OUT [--fail-on TEXT]

Each input line becomes "accepted <event_id>|<path>" or "rejected <reason>|<path>" in OUT (a FileSink,
committed on checkpoints); path is the features.validate file the worker imported, so a test
can tell the copy shipped with --pyFiles from an installed one.
--fail-on makes a record that contains TEXT raise (naming the features file too), to test
how a failed job is reported.
"""
from __future__ import annotations

import argparse
import sys

from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.common.typeinfo import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (FileSink, FileSource, OutputFileConfig, RollingPolicy,
                                                       StreamFormat)

NOW_MS = 1_735_689_600_000  # a fixed validation clock (2025-01-01) so results do not depend on the day


def label(line: str, fail_on: str | None) -> str:
    from features.schema import Event
    from features.validate import parse_event

    where = sys.modules["features.validate"].__file__  # the shipped copy, or an installed one
    if fail_on and fail_on in line:
        raise ValueError(f"planted failure on a record containing {fail_on!r} (features from {where})")
    got = parse_event(line, NOW_MS)
    return f"{'accepted ' + got.event_id if isinstance(got, Event) else 'rejected ' + got.reason}|{where}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fail-on")
    args = p.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(1000)  # the FileSink commits its files on checkpoints
    files = FileSource.for_record_stream_format(StreamFormat.text_line_format(), args.source)
    fail_on = args.fail_on
    (env.from_source(files.build(), WatermarkStrategy.no_watermarks(), "lines")
     .map(lambda line: label(line, fail_on), output_type=Types.STRING()).name("validate")
     .sink_to(FileSink.for_row_format(args.out, Encoder.simple_string_encoder())
              .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
              .with_output_file_config(OutputFileConfig.builder().with_part_suffix(".txt").build()).build()))
    env.execute("recstream cluster test: validate lines")


if __name__ == "__main__":
    main()
