#!/usr/bin/env bash
# Runs every test of wsbridge: formatting, lints, unit and integration tests, the
# minimal and static builds (tools/minimal.sh, tools/static.sh), the Autobahn
# conformance cases (tools/autobahn.sh), a minute of fuzzing with the corpus replay
# (tools/fuzz.sh), tiny runs of the benchmark harness and tools/permsg.py, and the check
# that the release binary's startup code is laid out together (tools/order.sh). Installs
# what the tests need first, idempotently: Python's `websockets` (interop test), websocketd
# (benchmark comparison), nginx (tests/nginx.rs), Chromium (tests/browser.rs), tinyproxy
# (tests/outbound.rs) and valgrind (tools/order.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    echo "tools/test.sh: need root to run: $*" >&2; return 1; fi
}

if ! python3 -c 'import websockets' 2>/dev/null; then
  echo "tools/test.sh: installing python3 websockets"
  python3 -m pip install --quiet websockets 2>/dev/null \
    || python3 -m pip install --quiet --user websockets 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages websockets
fi
if ! command -v websocketd >/dev/null; then
  echo "tools/test.sh: installing websocketd (Debian package) for the benchmark comparison"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq websocketd >/dev/null
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "tools/test.sh: installing nginx (Debian package) for tests/nginx.rs"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
if ! command -v tinyproxy >/dev/null; then
  echo "tools/test.sh: installing tinyproxy (Debian package) for tests/outbound.rs"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null
fi
if ! command -v valgrind >/dev/null; then
  echo "tools/test.sh: installing valgrind (Debian package) for tools/order.sh --check"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "tools/test.sh: installing chromium (Debian package) for tests/browser.rs"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
tools/minimal.sh
tools/static.sh
tools/autobahn.sh
tools/fuzz.sh 60
cargo bench --bench compare -- --quick
# The per-message profiling client still runs (the build is a no-op after tools/autobahn.sh).
cargo build --release --quiet --bin wsbridge
tools/permsg.py target/release/wsbridge --count 20 --size 1024
tools/permsg.py target/release/wsbridge --churn --count 5
tools/permsg.py "$(command -v websocketd)" --churn --count 5
# The release binary loads no libm.so: src/main.rs defines the one function it needed (`pow`).
if readelf -dW target/release/wsbridge | grep -q 'NEEDED.*libm\.so'; then
  echo "tools/test.sh: target/release/wsbridge needs libm.so again (see \`pow\` in src/main.rs):" >&2
  readelf -dW target/release/wsbridge | grep NEEDED >&2
  exit 1
fi
# tools/startup.order still names what the release binary runs at startup, and build.rs
# applied it (see tools/order.sh).
tools/order.sh --check
