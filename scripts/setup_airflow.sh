#!/usr/bin/env bash
# The Airflow environment the DAG test loads infra/airflow/ in: .cache/airflow-venv with
# requirements/airflow-lock.txt (apache-airflow 3.3.2 pins packages the project's lock cannot
# share). Idempotent: returns at once when the environment matches the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RECSTREAM_AIRFLOW_VENV:-.cache/airflow-venv}
STAMP="$VENV/.recstream-lock"
want=$(cat requirements/pip.txt requirements/airflow-lock.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
PY=$(command -v python3.11 || command -v python3)
printf 'setup: making the Airflow environment %s (about 30 s)\n' "$VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --require-hashes --upgrade -r requirements/pip.txt 2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -m pip install -q --require-hashes -r requirements/airflow-lock.txt 2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -c "import airflow.providers.standard.operators.bash" \
  || { printf 'setup: the Airflow environment does not import; remove %s and rerun\n' "$VENV"; exit 1; }
echo "$want" > "$STAMP"
