#!/usr/bin/env bash
# Compile the stream job's JVM operators (pipelines/stream/jvm: the batching of events per user
# bucket) against PyFlink's own Flink jars, into DEST/recstream-stream-ops.jar. Needs a JDK 17
# (javac, jar). Idempotent: rebuilds only when a source or the Flink jars changed.
# Usage: scripts/build_stream_ops.sh [DEST] [FLINK_LIB]
#   DEST defaults to $RECSTREAM_STREAM_DEPS or .cache/stream-deps; FLINK_LIB to PyFlink's lib folder.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${1:-${RECSTREAM_STREAM_DEPS:-.cache/stream-deps}}
PY=${PYTHON:-.venv/bin/python}
LIB=${2:-$("$PY" -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))')}
SRC=pipelines/stream/jvm
JAR="$DEST/recstream-stream-ops.jar"
say() { printf 'build_stream_ops: %s\n' "$*"; }

command -v javac >/dev/null || { say "javac not found: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless) and rerun"; exit 1; }
want=$( (cd "$SRC" && find . -name '*.java' | sort | xargs sha256sum; ls "$LIB") | sha256sum | cut -d' ' -f1)
if [ -f "$JAR" ] && [ "$(cat "$JAR.sha256" 2>/dev/null)" = "$want" ]; then
  say "present ($JAR)"
  exit 0
fi
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac -Xlint:all -Werror --release 17 -d "$work" -cp "$LIB/*" $(find "$SRC" -name '*.java' | sort)
jar --create --file "$work/ops.jar" -C "$work" recstream
mv "$work/ops.jar" "$JAR"
echo "$want" > "$JAR.sha256"
say "built $JAR"
