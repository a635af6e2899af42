#!/usr/bin/env python3
"""tools/echo_once.py URL TEXT [TIMEOUT]: sends TEXT to the WebSocket at URL and checks that
the same text comes back, each step within TIMEOUT seconds (default 5); exit 1 otherwise.
Used by tools/smoke.sh. Needs Python's `websockets`."""
import asyncio
import sys

import websockets


async def main(url, text, timeout):
    try:
        async with websockets.connect(url, open_timeout=timeout) as ws:
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), timeout)
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as e:
        raise SystemExit(f"echo_once: {url}: no echo of {text!r}: {type(e).__name__} {e}")
    if got != text:
        raise SystemExit(f"echo_once: {url}: sent {text!r}, got {got!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 5))
