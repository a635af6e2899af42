#!/usr/bin/env python3
"""Echo: every message the client sends comes straight back.

Run:  wsbridge --port=8080 examples/echo.py   then connect to ws://localhost:8080/

Each incoming WebSocket message arrives on stdin as one line; each line printed to
stdout goes back to the client as one message.
"""
import sys

for line in sys.stdin:
    # flush=True matters. When stdout is a pipe, as it is under wsbridge, Python's stdio
    # block-buffers it: without a flush, replies wait in a buffer of several KiB and
    # arrive late, or all at once when the program exits. This is websocketd's most
    # common complaint. C needs fflush(stdout), Perl $| = 1, grep --line-buffered.
    print(line.rstrip("\n"), flush=True)
