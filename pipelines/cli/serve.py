"""`recstream serve`: POST /rank and /retrieve with the champions (pipelines/serve/app.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from features.errors import MissingInput
from pipelines.cli import flags


def add(sub) -> None:
    s = sub.add_parser("serve", help="HTTP scoring endpoint: POST /rank, POST /retrieve with the champion models")
    s.add_argument("--workdir", required=True, help="a run folder with a feature store and a model registry")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--poll-s", type=float, default=1.0, help="how often to look for a new champion (default 1)")
    flags.online(s)
    s.set_defaults(func=serve)


def serve(args, extra) -> int:
    import uvicorn

    from pipelines.serve.app import create_app

    work = Path(args.workdir)
    if not (work / "feast" / "registry.db").is_file():
        raise MissingInput(work / "feast" / "registry.db", f"no feature store there; run `recstream materialize "
                           f"--workdir {work}` first (or check --workdir)")
    app = create_app(work, flags.online_store(args), args.poll_s)
    print(f"serving {work} on http://{args.host}:{args.port} (POST /rank, POST /retrieve, GET /health; "
          f"docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
