#!/usr/bin/env python3
"""Echo server for --framing=lenprefix: every message comes back with its type.

Run: wsbridge --port=8080 --framing=lenprefix examples/lenprefix_echo.py

Each message on stdin (and each one written to stdout) is a header line
"t LEN\\n" (text) or "b LEN\\n" (binary) followed by exactly LEN payload bytes,
so messages may hold newlines or any binary data. This one also answers text
messages with their length, to show writing a frame of your own.
"""
import sys

inp, out = sys.stdin.buffer, sys.stdout.buffer


def write_frame(kind: bytes, payload: bytes) -> None:
    out.write(b"%s %d\n" % (kind, len(payload)) + payload)
    out.flush()  # one frame = one message; flush so it leaves now


while True:
    header = inp.readline()
    if not header:
        break  # the client went away: stdin is closed
    kind, length = header.split()
    payload = inp.read(int(length))
    write_frame(kind, payload)
    if kind == b"t":
        write_frame(b"t", b"%d bytes" % len(payload))
