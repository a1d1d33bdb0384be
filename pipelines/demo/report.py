"""The demo's closing summary, for people (report) and for summary.json (jsonable)."""
from __future__ import annotations

import numpy as np


def jsonable(obj):
    """json.dumps' default=: numpy scalars as Python numbers, anything else as its str."""
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def report(s: dict) -> str:
    """A few lines: counts, AUC against popularity, seconds per stage, where the artifacts are."""
    b = s["backfill"]
    lines = [
        "recstream demo summary",
        f"  events read {b['read']:,}  accepted {b['accepted']:,}  rejected {b['rejected_total']:,}",
        f"  users online {s.get('materialized_users', 0):,}",
    ]
    if "metrics" in s:
        m = s["metrics"]
        lines.append(f"  AUC {m['auc']:.4f} vs popularity {m['baseline_auc']:.4f} "
                     f"(ranker version {s.get('model_version', 'not promoted')})")
    st = s.get("stream", {})
    lines.append(f"  stream: read {st.get('read', 0):,}, rejected {st.get('rejected_total', 0):,}, "
                 f"late {st.get('late', 0):,}, rows written {st.get('rows_written', 0):,}")
    rt = s.get("retrain")
    if rt:
        blocked = ", ".join(f"window {q['window']} ({', '.join(q['reasons'])})" for q in rt["quarantined"]) or "none"
        lines.append(f"  continuous training: {rt['windows']} windows; promoted {rt['promoted'] or 'none'}, "
                     f"rejected {rt['rejected'] or 'none'}; quarantined {blocked}; champions "
                     f"{rt.get('champions', 'unchanged')}")
    lines.append("  seconds per stage: " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
    lines.append(f"  artifacts: {s['workdir']} (summary.json, offline/, feast/, registry/, retrain/)")
    return "\n".join(lines)
