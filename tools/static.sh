#!/usr/bin/env bash
# The static build for small boards: one file with no shared libraries to load, so its
# idle RSS is its own pages (BENCHMARKS.md). Built as x86_64-unknown-linux-musl when
# rustup has that target's std and a musl C compiler is there for ring's C code
# (`x86_64-linux-musl-gcc`, as Debian's musl-tools has, or `musl-gcc`; tools/test.sh
# installs both); otherwise as glibc with crt-static, and says so. Checks that the result
# is static, then that it serves one echo. Called by tools/test.sh; prints the binary's
# path.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/musl.env

if [ -n "$musl" ]; then
  target=x86_64-unknown-linux-musl
  "${musl_env[@]}" cargo build --release --target "$target"
else
  target=x86_64-unknown-linux-gnu
  echo "tools/static.sh: $musl_missing; building static glibc"
  # --target keeps the flag off build scripts and proc macros, which cannot be static.
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target"
fi
bin=target/$target/release/wsbridge

# Static: no program interpreter and no shared library needed.
if readelf -lW "$bin" | grep -q 'INTERP' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
  echo "tools/static.sh: $bin is not static:" >&2
  readelf -dW "$bin" | grep NEEDED >&2 || true
  exit 1
fi
tools/smoke.sh "$bin" "static build ($target)"
echo "tools/static.sh: static build OK: $bin ($(stat -c %s "$bin") bytes)"
