#!/usr/bin/env python3
"""Interop check with Python's `websockets` client (a second, independent implementation).

Usage: interop_client.py ECHO_URL EXIT_URL
  ECHO_URL serves `cat`; EXIT_URL serves a program that prints "bye" and exits 3.
Exits 0 when every check passes; prints what failed otherwise.
"""
import asyncio
import sys

import websockets


async def main(echo_url: str, exit_url: str) -> None:
    async with websockets.connect(echo_url, open_timeout=10, close_timeout=5) as ws:
        for msg in ["hello", "", "ünïcødé", "x" * 100_000]:
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert got == msg, f"echo mismatch: sent {len(msg)} chars, got {len(got)}"
        # Pings from this client are answered.
        pong = await ws.ping(b"p1")
        await asyncio.wait_for(pong, 10)
    assert ws.close_code == 1000, f"client close echoed as {ws.close_code}"

    async with websockets.connect(exit_url, open_timeout=10, close_timeout=5) as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == "bye"
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected the connection to close")
        except websockets.ConnectionClosedError as e:
            assert e.rcvd is not None, "no Close frame received (1006)"
            assert (e.rcvd.code, e.rcvd.reason) == (1011, "exit status 3"), e.rcvd
    print("interop ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
