#!/usr/bin/env bash
# tools/order.sh [--check]: writes tools/startup.order, the functions the release binary
# runs at startup, for a first WebSocket echo and at shutdown, as this toolchain and
# Cargo.lock name them, and tools/startup.rodata, the read-only data input sections
# those read. build.rs has the linker place each together (see its comment).
#
# How: relinks the release binary, tools/static.sh's static ones (glibc, and musl where
# it can be built), the `small` profile's, and the release and small ones with
# --no-default-features, each with symbols
# (`cargo rustc -- -C strip=none`: the same profile, so the same names); runs each under
# `valgrind --tool=callgrind` twice (started, counts dumped once it is idle, SIGTERM; and
# the same with one echo through `cat` after the dump); and keeps the names callgrind saw
# that the binary defines: those run until idle first, then those of the shutdown, then
# those of the echo, so that an idle server touches as few 64 KiB windows as it can. A
# third run under `valgrind --tool=lackey`, which traces every load, and the linker's map
# of the binary give the read-only data sections, in the order they are first read. The
# binaries are then relinked as `cargo build` makes them.
#
# Re-run after updating dependencies or the toolchain (the names change), and after
# changes to the code: LTO numbers its local copies of std's functions (`….1234`), the
# numbers shift, and a startup function the file no longer names can cost a window of
# resident code (64 KiB). Commit the file. --check (tools/test.sh runs it) writes
# nothing: it fails when the file lists fewer than 90% of the functions the release
# binary runs now, or when those run until it is idle are spread over more than a third
# of the code (the order was not applied); likewise when tools/startup.rodata names
# fewer than 90% of the read-only data sections it reads, or the binary has no
# `.rodata.startup` section.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
check=${1:-}
work=$(mktemp -d)
pid=
# Set while target/ holds binaries relinked with symbols (or without the default
# features); on any exit they are rebuilt as `cargo build` makes them.
relinked=
static_env=(env RUSTFLAGS="-C target-feature=+crt-static") # tools/static.sh's glibc build
. tools/musl.env # tools/static.sh's musl build, where it can be made
restore() {
  cargo build --release --quiet --bin wsbridge || return 1
  if [ "$relinked" = all ]; then
    "${static_env[@]}" cargo build --release --quiet --bin wsbridge --target x86_64-unknown-linux-gnu || return 1
    if [ -n "$musl" ]; then
      "${musl_env[@]}" cargo build --release --quiet --bin wsbridge --target x86_64-unknown-linux-musl || return 1
    fi
    cargo build --profile small --quiet --bin wsbridge || return 1
  fi
  relinked=
}
trap 'rc=$?; set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; [ -z "$relinked" ] || restore || rc=1; exit $rc' EXIT
STEP=60 # seconds for any wait: callgrind runs the server about 50x slower

# start BIN VALGRIND-ARGS...: starts BIN on loopback with `cat` under valgrind with those
# arguments; sets $pid, and $addr (its ws:// URL) once it listens.
start() {
  local bin=$1; shift
  valgrind "$@" "$bin" --port=0 --address=127.0.0.1 --loglevel=error cat 2>"$work/log" &
  pid=$!
  addr=
  for _ in $(seq $((STEP * 20))); do
    addr=$(grep -o 'ws://[^ ]*' "$work/log" | head -1) && [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "tools/order.sh: $bin printed no startup line under valgrind $1: $(cat "$work/log")" >&2; exit 1; }
}

# stop: ends the server `start` started (SIGTERM, so that its shutdown runs too).
stop() {
  kill -TERM "$pid"
  timeout "$STEP" tail --pid="$pid" -f /dev/null || { kill -KILL "$pid"; exit 1; }
  wait "$pid" || true
  pid=
}

# profile BIN OUT [echo]: callgrind's function names (mangled) for one run of BIN: those
# it ran until it was idle in OUT.idle (callgrind_control dumps the counts then), all of
# them in OUT.
profile() {
  local bin=$1 out=$2 echo=${3:-}
  rm -f "$work"/cg*
  start "$bin" --tool=callgrind --demangle=no --callgrind-out-file="$work/cg"
  # The worker threads start beside the startup line; give them time to park (only which
  # list a function lands in depends on it).
  sleep 2
  local dumped=1
  timeout 20 callgrind_control --dump "$pid" >/dev/null 2>&1 && [ -s "$work/cg.1" ] || dumped=
  if [ -z "$dumped" ]; then
    # callgrind_control needs vgdb, which may not be able to reach a process blocked in a
    # system call where ptrace is not allowed. A check then counts the whole run as
    # startup (as before the idle split); writing the file needs the split.
    echo "tools/order.sh: callgrind_control could not dump $bin's counts once idle" >&2
    [ "$check" = --check ] || exit 1
  fi
  if [ -n "$echo" ]; then
    timeout "$STEP" tools/echo_once.py "$addr" order 50
  fi
  stop
  [ -n "$dumped" ] || cp "$work/cg" "$work/cg.1"
  nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $1, $3}' | sort -k2 -u >"$work/defined"
  seen "$work/cg" "$work/cg.1" | cut -d' ' -f2 >"$out"
  seen "$work/cg.1" >"$work/addr"
  cut -d' ' -f2 "$work/addr" >"$out.idle"
}

# seen CALLGRIND-FILE...: "address name" of each function in them that $work/defined has.
seen() {
  grep -ohP '^c?fn=\(\d+\) \K.*' "$@" | sort -u | join -1 2 -2 1 -o 1.1,0 "$work/defined" -
}

# rodata BIN MAP OUT: appends to OUT the read-only data input sections (as MAP, the
# linker's map of BIN, names them) that BIN reads from its start until it is idle, for
# one echo through `cat` and at shutdown, in the order it first reads them.
rodata() {
  local bin=$1 map=$2 out=$3
  rm -f "$work"/lk.*
  start "$bin" --tool=lackey --trace-mem=yes --log-file="$work/lk.trace"
  cp "/proc/$pid/maps" "$work/lk.maps" # where valgrind loaded the binary
  sleep 1
  timeout "$STEP" tools/echo_once.py "$addr" order 50
  stop
  python3 - "$bin" "$map" "$work/lk.maps" "$work/lk.trace" >>"$out" <<'PY'
import bisect, os, re, struct, sys

binary, linkmap, maps, trace = sys.argv[1:5]
# The load bias: where the mapping of the file's start begins, less the first PT_LOAD
# segment's address (0 for a position-independent binary).
with open(binary, "rb") as f:
    head = f.read(64)
    phoff, phentsize, phnum = struct.unpack_from("<Q", head, 32)[0], *struct.unpack_from("<HH", head, 54)
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
first = min(
    struct.unpack_from("<QQ", phdrs, i * phentsize + 8)[1]
    for i in range(phnum)
    if struct.unpack_from("<I", phdrs, i * phentsize)[0] == 1
)
real = os.path.realpath(binary)
bias = None
for line in open(maps):
    f = line.split()
    if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
        bias = int(f[0].split("-")[0], 16) - (first & ~0xFFF)
        break
if bias is None:
    sys.exit(f"tools/order.sh: {binary} is not in valgrind's memory map")
# lld's map: an output section's line has its name right after the alignment, an input
# section's is indented 8 more and reads FILE:(NAME).
row = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ ( *)(\S.*)$")
secs, out = [], ""
for line in open(linkmap):
    m = row.match(line)
    if not m:
        continue
    indent, text = len(m.group(3)), m.group(4)
    if indent == 0:
        out = text
    elif indent == 8 and out.startswith(".rodata") and text.endswith(")") and ":(" in text:
        size = int(m.group(2), 16)
        if size:
            secs.append((int(m.group(1), 16), size, text[text.rindex(":(") + 2 : -1]))
if not secs:
    sys.exit(f"tools/order.sh: no read-only data sections in {linkmap} (not an lld map?)")
secs.sort()
starts = [s[0] for s in secs]
seen = {}
for line in open(trace):
    if len(line) < 4 or line[0] != " " or line[1] not in "LSM":
        continue
    a = int(line[3 : line.index(",")], 16) - bias
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < starts[i] + secs[i][1]:
        seen.setdefault(secs[i][2], secs[i][1])
for name in seen:
    print(name)
print(f"tools/order.sh: {binary} read {len(seen)} read-only data sections, {sum(seen.values())} bytes", file=sys.stderr)
PY
}

# covers FILE NOW WHAT: fails unless FILE (tools/startup.*) lists at least 90% of the
# names in NOW, what the release binary uses now; WHAT says what they are.
covers() {
  local file=$1 now=$2 what=$3 total listed
  sort -u "$now" >"$work/covers.now"
  total=$(wc -l <"$work/covers.now")
  listed=$(grep -v '^#' "$file" | sort -u | comm -12 "$work/covers.now" - | wc -l)
  echo "tools/order.sh: $file lists $listed of the $total $what"
  if [ $((listed * 100)) -lt $((total * 90)) ]; then
    echo "tools/order.sh: fewer than 90% listed: run tools/order.sh and commit $file" >&2
    exit 1
  fi
}

# windows: how many 64 KiB windows (the kernel's fault-around unit) the functions in
# $work/addr (the last profile's idle set) start in.
windows() {
  awk '{print substr($1, 1, length($1) - 4)}' "$work/addr" | sort -u | wc -l
}

# names BIN CARGO-RUSTC-COMMAND...: builds BIN with symbols and profiles it; appends to
# $work/idle (started and idle), $work/startup (that and shutdown), $work/echo and
# $work/rodata, and sets $spread (of the idle set) and $text (in 64 KiB windows).
names() {
  local bin=$1; shift
  relinked=${relinked:-release}
  "$@" --quiet -- -C strip=none -C link-arg=-Wl,-Map="$work/map"
  profile "$bin" "$work/s"
  spread=$(windows)
  text=$(readelf -SW "$bin" | sed 's/^ *\[ *[0-9]*\] *//' | awk '$1 == ".text" {print $5}')
  text=$((16#$text / 65536 + 1))
  profile "$bin" "$work/e" echo
  cat "$work/s.idle" "$work/e.idle" >>"$work/idle"
  cat "$work/s" >>"$work/startup"
  cat "$work/e" >>"$work/echo"
  rodata "$bin" "$work/map" "$work/rodata"
}

release=(cargo rustc --release --bin wsbridge)
names target/release/wsbridge "${release[@]}"
if [ "$check" != --check ]; then
  relinked=all
  # tools/static.sh's build (static glibc; its libc functions are in the binary too).
  names target/x86_64-unknown-linux-gnu/release/wsbridge \
    "${static_env[@]}" "${release[@]}" --target x86_64-unknown-linux-gnu
  # Its musl build (musl's std is mangled apart from glibc's, and musl's libc is in it).
  if [ -n "$musl" ]; then
    names target/x86_64-unknown-linux-musl/release/wsbridge \
      "${musl_env[@]}" "${release[@]}" --target x86_64-unknown-linux-musl
  else
    echo "tools/order.sh: $musl_missing; the file will not name the musl build's functions" >&2
  fi
  # The small profile's, and both without the default features (README, "On a small
  # board"): features are part of the names too.
  names target/small/wsbridge cargo rustc --profile small --bin wsbridge
  names target/release/wsbridge "${release[@]}" --no-default-features
  names target/small/wsbridge cargo rustc --profile small --bin wsbridge --no-default-features
fi

# In the order the file lists them: what runs until the server is idle, then what its
# shutdown adds, then what an echo adds.
sort -u "$work/idle" >"$work/idle.sorted"
sort -u "$work/startup" | comm -23 - "$work/idle.sorted" >"$work/shutdown.sorted"
sort -u "$work/idle.sorted" "$work/shutdown.sorted" >"$work/startup.sorted"
sort -u "$work/echo" | comm -23 - "$work/startup.sorted" >"$work/echo.sorted"

if [ "$check" = --check ]; then
  restore
  cat "$work/startup.sorted" "$work/echo.sorted" >"$work/now"
  covers tools/startup.order "$work/now" "functions the release binary runs at startup and for one echo"
  echo "tools/order.sh: its startup functions start in $spread of the $text 64 KiB windows of its code"
  # Unordered, startup touched 30 of the 40 windows when this was written.
  if [ $((spread * 3)) -gt "$text" ]; then
    echo "tools/order.sh: the startup code is spread over more than a third of the binary: build.rs did not order it" >&2
    exit 1
  fi
  covers tools/startup.rodata "$work/rodata" "read-only data sections it reads"
  if ! readelf -SW target/release/wsbridge | grep -q ' \.rodata\.startup '; then
    echo "tools/order.sh: target/release/wsbridge has no .rodata.startup section: build.rs did not gather its startup data" >&2
    exit 1
  fi
  exit 0
fi

{
  echo "# Written by tools/order.sh (read it and build.rs before editing): the functions"
  echo "# wsbridge runs until it is idle, then those its shutdown adds, then those a first"
  echo "# echo adds, for the linker to place together. Names as rustc $(rustc -V | cut -d' ' -f2)"
  echo "# and Cargo.lock mangle them."
  # The C runtime's, which run first and which callgrind does not name: crt1.o's and
  # crtbegin's .text sections, so that the entry point is not in a window of its own.
  printf '%s\n' _start deregister_tm_clones register_tm_clones __do_global_dtors_aux frame_dummy
  cat "$work/idle.sorted" "$work/shutdown.sorted" "$work/echo.sorted"
} >tools/startup.order
echo "tools/order.sh: wrote tools/startup.order ($(wc -l <"$work/idle.sorted") functions until idle, $(wc -l <"$work/shutdown.sorted") more at shutdown, $(wc -l <"$work/echo.sorted") more for an echo)"
{
  echo "# Written by tools/order.sh (read it and build.rs before editing): the read-only data"
  echo "# input sections (strings, constants, jump tables) wsbridge reads from its start"
  echo "# until it is idle, for a first echo and at shutdown, in the order it first reads"
  echo "# them, for the linker to gather into .rodata.startup. Names as rustc"
  echo "# $(rustc -V | cut -d' ' -f2) and Cargo.lock give them."
  awk '!seen[$0]++' "$work/rodata"
} >tools/startup.rodata
echo "tools/order.sh: wrote tools/startup.rodata ($(grep -vc '^#' tools/startup.rodata) sections)"
# Back to the binaries `cargo build` makes (stripped, now in the new order).
restore
