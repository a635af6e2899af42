#!/usr/bin/env bash
# The minimal build (`--no-default-features`: no TLS, no --connect, no access control, no
# JSON logs, no compression), for small boards: it passes clippy, serves a WebSocket, and refuses the
# flags it was built without with one line and exit 1. Called by tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --no-default-features --all-targets -- -D warnings
cargo build --no-default-features --target-dir target/minimal
bin=target/minimal/debug/wsbridge

expect_refusal() {
  local want=$1; shift
  local out status=0
  out=$("$bin" "$@" 2>&1) || status=$?
  if [ "$status" -ne 1 ] || [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || [[ "$out" != *"$want"* ]]; then
    echo "tools/minimal.sh: '$*' should fail with exit 1 and one line naming $want; got $status: $out" >&2
    exit 1
  fi
}
expect_refusal "cargo feature \`connect\`" --connect=ws://127.0.0.1:9/
expect_refusal "cargo feature \`tls\`" --ssl --sslcert=x.pem --sslkey=y.pem --port=0 cat
expect_refusal "cargo feature \`auth\`" --htpasswd=users --port=0 cat
expect_refusal "cargo feature \`auth\`" --authcmd=/bin/true --port=0 cat
expect_refusal "cargo feature \`json\`" --logformat=json --port=0 cat
expect_refusal "cargo feature \`nats\`" --broker=nats://127.0.0.1:4222 --topic=t --port=0
expect_refusal "cargo feature \`compress\`" --compress --port=0 cat

# It still serves: one echo through cat.
tools/smoke.sh "$bin" "minimal build"
echo "tools/minimal.sh: minimal build OK"
