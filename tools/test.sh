#!/usr/bin/env bash
# Runs every test of wsbridge: formatting, lints, unit and integration tests, the
# minimal and static builds (tools/minimal.sh, tools/static.sh), the Autobahn
# conformance cases (tools/autobahn.sh), a minute of fuzzing with the corpus replay
# (tools/fuzz.sh), and tiny runs of the benchmark harness and tools/permsg.py. Installs
# what the tests need first, idempotently: Python's `websockets` (interop test), websocketd
# (benchmark comparison), nginx (tests/nginx.rs), Chromium (tests/browser.rs), tinyproxy
# (tests/outbound.rs), promtool (Debian's prometheus, tests/metrics.rs), zsh and fish
# (completion tests), groff (man page test), nats-server (tests/it/broker), cargo-deb (tools/deb.sh), and the musl std
# and musl-tools (tools/static.sh).
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
# apt_install PACKAGE WHY: installs a Debian package (the first call updates the index).
apt_updated=
apt_install() {
  echo "tools/test.sh: installing $1 (Debian package) $2"
  [ -n "$apt_updated" ] || { as_root apt-get update -qq && apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${APT_OPTS:-} "$1" >/dev/null
}
command -v websocketd >/dev/null || apt_install websocketd "for the benchmark comparison"
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx "for tests/nginx.rs"
command -v tinyproxy >/dev/null || apt_install tinyproxy "for tests/outbound.rs"
# promtool only; the server's recommends (node exporter, smartmontools, ...) are not needed.
command -v promtool >/dev/null || APT_OPTS=--no-install-recommends apt_install prometheus "for tests/metrics.rs (promtool)"
[ -x /usr/bin/chromium ] || apt_install chromium "for tests/browser.rs"
command -v htpasswd >/dev/null || apt_install apache2-utils "for tests/auth.rs (htpasswd)"
command -v mkpasswd >/dev/null || apt_install whois "for tests/auth.rs (mkpasswd)"
command -v pgrep >/dev/null || apt_install procps "for tests/auth.rs (pgrep, ps)"
command -v zsh >/dev/null || apt_install zsh "for tests/it/completions.rs (zsh -n)"
command -v fish >/dev/null || apt_install fish "for tests/it/completions.rs (fish -n)"
command -v groff >/dev/null || apt_install groff-base "for tests/it/cli.rs (the man page rendered)"
command -v nats-server >/dev/null || apt_install nats-server "for tests/it/broker (--broker)"
command -v cargo-deb >/dev/null || {
  echo "tools/test.sh: installing cargo-deb (cargo install) for tools/deb.sh"
  cargo install cargo-deb --locked --quiet
}
# The musl std and C compiler for tools/static.sh. Without the std (rustup cannot reach
# its server) the static build is made with glibc instead, and says so.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "tools/test.sh: installing the x86_64-unknown-linux-musl std (rustup) for tools/static.sh"
  timeout 300 rustup target add x86_64-unknown-linux-musl \
    || echo "tools/test.sh: could not install the musl std; tools/static.sh will build static glibc" >&2
fi
command -v musl-gcc >/dev/null || apt_install musl-tools "for tools/static.sh (ring's C code for musl)"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
tools/minimal.sh
tools/static.sh
tools/deb.sh
tools/autobahn.sh
tools/fuzz.sh 60
cargo bench --bench compare -- --quick
# The per-message profiling client still runs (the build is a no-op after tools/autobahn.sh).
cargo build --release --quiet --bin wsbridge
# The --shared fan-out bench, tiny (local, through nats-server, and its floor).
cargo bench --bench fanout -- --runs 1 --clients 100 --messages 200
tools/permsg.py target/release/wsbridge --count 20 --size 1024
tools/permsg.py target/release/wsbridge --churn --count 5
tools/permsg.py "$(command -v websocketd)" --churn --count 5
