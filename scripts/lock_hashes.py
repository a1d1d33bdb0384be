"""Write sha256 hashes into a lock file, so `pip install --require-hashes` verifies every file.

    python scripts/lock_hashes.py requirements/lock.txt [more lock files]

Each pin gets the hashes of all its files on PyPI (any platform, as pip-compile
--generate-hashes does) plus the hash of the file pip picks on this machine when it differs
(a local mirror or wheel folder, such as the CPU build of torch). Rerun after editing pins.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

PYPI = "https://pypi.org/simple/{}/"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> list[tuple[str, str]]:
    return [m.groups() for line in lines if (m := PIN.match(line.strip()))]


def _pypi_hashes(name: str, version: str) -> set[str]:
    req = urllib.request.Request(PYPI.format(_norm(name)),
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    return {f["hashes"]["sha256"] for f in files if _of(f["filename"], name, version) and "sha256" in f["hashes"]}


def _of(filename: str, name: str, version: str) -> bool:
    """Whether a distribution file (wheel or sdist) is ``name`` at ``version`` (names normalized, PEP 503)."""
    for ext in (".whl", ".tar.gz", ".zip"):
        if filename.endswith(ext):
            stem = filename[: -len(ext)]
            break
    else:
        return False
    if ext == ".whl":
        parts = stem.split("-")
        return len(parts) >= 5 and _norm(parts[0]) == _norm(name) and parts[1] == version
    dist, _, ver = stem.rpartition("-")
    return _norm(dist) == _norm(name) and ver == version


def _local_hashes(pins: list[tuple[str, str]]) -> dict[str, set[str]]:
    """The hash of the file pip would install here for each pin (its report, nothing installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        reqs, report = Path(tmp, "reqs.txt"), Path(tmp, "report.json")
        reqs.write_text("".join(f"{n}=={v}\n" for n, v in pins))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--no-deps", "--report", str(report), "-r", str(reqs)], check=True)
        out: dict[str, set[str]] = {}
        for item in json.loads(report.read_text())["install"]:
            digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
            out.setdefault(_norm(item["metadata"]["name"]), set()).update([digest] if digest else [])
        return out


def rewrite(path: Path) -> int:
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    pins = _pins(lines)
    local = _local_hashes(pins)
    body = []
    for name, version in pins:
        hashes = sorted(_pypi_hashes(name, version) | local.get(_norm(name), set()))
        if not hashes:
            raise SystemExit(f"lock_hashes: no file found for {name}=={version}; check the pin")
        body.append(" \\\n".join([f"{name}=={version}"] + [f"    --hash=sha256:{h}" for h in hashes]))
    path.write_text("\n".join(header + body) + "\n")
    return len(pins)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["requirements/lock.txt"]:
        print(f"lock_hashes: {arg}: {rewrite(Path(arg))} pins hashed")
