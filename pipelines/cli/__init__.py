"""`recstream`: one command, subcommands over importable functions.

Each command group is a module here with ``add(subparsers)`` and the functions it runs;
shared flags live in flags.py. Any RecstreamError (a bad flag, config value, input file or
an unreachable service) ends as one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from features.errors import RecstreamError
from pipelines.cli import batch, cluster, demo, embed, kafka, report, retrain, serve, store, stream, train
from pipelines.config import as_folder
from pipelines.progress import quiet_libraries

GROUPS = (demo, batch, store, stream, cluster, kafka, embed, train, retrain, serve, report)
FOLDERS = ("workdir", "output")  # flags that name a folder to work in, checked before any work


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recstream", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("RECSTREAM_LOG", "WARNING"))
    quiet_libraries()
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and not getattr(args, "beam_flags", False):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        for flag in FOLDERS:
            if getattr(args, flag, None):
                as_folder(getattr(args, flag), f"--{flag}")
        return args.func(args, extra)
    except RecstreamError as err:
        print(f"recstream {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        counts = getattr(err, "counts", None)  # the stream job's counts so far (pipelines.stream.driver)
        if counts is not None and args.command == "stream":
            print(json.dumps(counts, indent=2))
        return _interrupted(args.command)
    except RuntimeError as err:
        if str(err).startswith("KeyboardInterrupt"):  # Beam wraps a Ctrl-C in its workers this way
            return _interrupted(args.command)
        raise


def _interrupted(command: str) -> int:
    print(f"recstream {command}: interrupted (Ctrl-C); what it finished is whole (tables are swapped in at the "
          "end, online rows never move back in time): run it again to finish", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
