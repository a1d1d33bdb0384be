"""Flags several commands share, declared once; their defaults come from the policies they set."""
from __future__ import annotations

import argparse

from features.user_state import FeaturePolicy

DEFAULTS = FeaturePolicy()  # lifelong cap (sequence.max_len), recent_len, category_len


def caps(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """--max-len, --recent-len, --category-len: the sequence views' lengths (the backfill's).
    ``defaults`` False leaves them None, so a config file's values stand unless a flag is given."""
    d = DEFAULTS
    p.add_argument("--max-len", type=int, default=d.sequence.max_len if defaults else None,
                   help=f"lifelong sequence cap (default {d.sequence.max_len})")
    p.add_argument("--recent-len", type=int, default=d.recent_len if defaults else None,
                   help=f"user_recent's length (default {d.recent_len})")
    p.add_argument("--category-len", type=int, default=d.category_len if defaults else None,
                   help=f"user_category_sequence's length (default {d.category_len})")


def cap_values(args) -> dict[str, int]:
    """Each sequence view's cap from the flags, for its gate or its point-in-time reads."""
    return {"user_sequence": args.max_len, "user_recent": args.recent_len, "user_category_sequence": args.category_len}


def online(p: argparse.ArgumentParser, default: str | None = "sqlite") -> None:
    """--online / --redis-url: which online store (Redis's URL also from $RECSTREAM_REDIS_URL)."""
    p.add_argument("--online", choices=("sqlite", "redis"), default=default,
                   help="online store: the run folder's SQLite (default) or Redis")
    p.add_argument("--redis-url", help="host:port[,db=N] with --online redis (default $RECSTREAM_REDIS_URL)")


def online_store(args):
    """The --online / --redis-url flags as an OnlineStore."""
    from pipelines.store.feature_store import OnlineStore

    return OnlineStore(kind=args.online or "sqlite", redis_url=args.redis_url)


def json_arg(text: str | None, cls, what: str):
    """A dataclass from a JSON flag (e.g. --synthetic '{"users": 100}'), or cls() when absent."""
    import json

    from pipelines.config import ConfigError, from_dict

    if not text:
        return cls()
    try:
        return from_dict(cls, json.loads(text), what)
    except json.JSONDecodeError as err:
        raise ConfigError(what, f"is not valid JSON ({err.msg} at character {err.pos}): {text!r}") from None


def given(flags: dict) -> dict:
    """The flags the user gave (not None), tables kept only where something in them was given:
    what to lay over a config file's values."""
    out = {}
    for key, value in flags.items():
        value = given(value) if isinstance(value, dict) else value
        if value is not None and value != {}:
            out[key] = value
    return out


def json_output(p: argparse.ArgumentParser) -> None:
    """--json: the command's result as JSON for machines (default: a short summary for people)."""
    p.add_argument("--json", action="store_true", help="print the result as JSON (default: a short summary)")


def counted(counts: dict) -> str:
    """{"a": 2, "b": 1} as "a 2, b 1" (largest first); "" when empty."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
