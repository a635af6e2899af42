#!/bin/sh
# wsbridge the other way round: a shell pipeline talking to a WebSocket server
# (`--connect` without PROGRAM relays wsbridge's own stdin and stdout).
#
#   examples/connect.sh [URL]        default URL: ws://localhost:8080/
#
# Try it against the echo example, started in another terminal with
#   cargo run --release -- --port=8080 examples/echo.py
# Each line below becomes one message; each message the server sends back is printed.
# After the last line wsbridge waits until the server has been quiet for 2 s, then
# closes with 1000 and exits 0. Set WSBRIDGE to the binary to use.
set -eu
url=${1:-ws://localhost:8080/}
printf '%s\n' "hello" "from a shell pipeline" |
  "${WSBRIDGE:-wsbridge}" --connect="$url" --loglevel=error
