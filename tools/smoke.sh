#!/usr/bin/env bash
# tools/smoke.sh BIN [NAME]: BIN serves a WebSocket on 127.0.0.1 (port 0) and echoes one
# message through `cat`, checked with Python's websockets (installed by tools/test.sh).
# Used by tools/minimal.sh and tools/static.sh for builds `cargo test` does not run.
set -euo pipefail
bin=$1
name=${2:-$bin}
log=$(mktemp)
"$bin" --port=0 --address=127.0.0.1 cat 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$log" && break
  sleep 0.05
done
addr=$(grep -o 'ws://[^ ]*' "$log" | head -1)
[ -n "$addr" ] || { echo "tools/smoke.sh: $name printed no startup line: $(cat "$log")" >&2; exit 1; }
timeout 10 "$(dirname "$0")/echo_once.py" "$addr" "$name"
