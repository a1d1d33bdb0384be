#!/usr/bin/env bash
# Set up everything recstream needs on this machine. Idempotent: a second run
# checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.recstream-lock"
say() { printf 'setup: %s\n' "$*"; }
# pip on these machines warns "Location ... is ignored" for every package: keep real errors visible.
pip_quiet() { "$@" 2> >(grep -v "is ignored" >&2); }

# 1. System packages: Java 17 with its compiler (PyFlink; the stream job's JVM operators),
# redis-server (online store tests), chromium (the report test).
need_apt=()
{ java -version 2>&1 | grep -q 'version "17' && javac -version 2>&1 | grep -q ' 17'; } || need_apt+=(openjdk-17-jdk-headless)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v chromium >/dev/null || need_apt+=(chromium)  # the report test looks at the page in a real browser
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing system packages: ${need_apt[*]}; install them (e.g. sudo apt-get install ${need_apt[*]}) and rerun"
    exit 1
  fi
fi

# 2. Python 3.11 virtual environment with the exact lock.
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  say "Python 3.11 is required, found $("$PY" --version 2>&1); install python3.11 and rerun"; exit 1; }
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
want=$(cat requirements/pip.txt requirements/torch-cpu.txt requirements/lock.txt requirements/torchrec.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "installing the locked Python packages (about 2 GB, a few minutes the first time)"
  # Every file is checked against the sha256 hashes in the lock (scripts/lock_hashes.py writes them).
  pip_quiet "$VENV/bin/python" -m pip install -q --require-hashes --upgrade -r requirements/pip.txt
  # torch's CPU build first: among files whose hashes the lock allows, pip would rank PyPI's CUDA build first.
  # (Where the wheel lies in a local wheel folder and download.pytorch.org is out of reach, pip's
  # one retry warning is dropped.)
  "$VENV/bin/python" -m pip install -q --no-deps --require-hashes --retries 1 \
    --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/torch-cpu.txt \
    2> >(grep -v -e "is ignored" -e "/whl/cpu/torch/" >&2)
  pip_quiet "$VENV/bin/python" -m pip install -q --require-hashes -r requirements/lock.txt
  # torchrec's metadata asks for the CUDA fbgemm-gpu; the CPU build is in the lock.
  pip_quiet "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/torchrec.txt
  pip_quiet "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$STAMP"
fi
"$VENV/bin/python" -c 'import torchrec, pyflink, apache_beam, feast, great_expectations' 2>/dev/null || {
  say "the environment does not import cleanly; remove $VENV and rerun"; exit 1; }
PYTHON="$VENV/bin/python" bash scripts/fetch_stream_deps.sh  # Kafka broker + connector jars (docs/streaming.md)
PYTHON="$VENV/bin/python" bash scripts/build_stream_ops.sh  # the stream job's JVM operators (pipelines/stream/jvm)
bash scripts/setup_airflow.sh  # the separate environment the Airflow DAG test loads the DAG in
say "ready ($VENV)"
