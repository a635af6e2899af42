#!/usr/bin/env python3
"""Several Python `websockets` clients of one `--shared --compress` server at once.

Usage: shared_compress_clients.py URL SPEC_JSON
  SPEC_JSON: {"clients": [OFFER, ...], "send": [...], "binary": false}
  OFFER: "default" (websockets' own offer), "off" (no extension), or an integer N
  (permessage-deflate asking server_max_window_bits=N).
Every client connects first; then the first one sends the messages (text, or with
"binary" UTF-8 bytes in binary messages) and every client reads them all, in order, with
the right message type. Prints one line per client: its Sec-WebSocket-Extensions answer
("-" when none). Exits non-zero with what failed.
"""
import asyncio
import json
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


def options(offer):
    if offer == "default":
        return {}
    if offer == "off":
        return {"compression": None}
    return {
        "compression": None,
        "extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=int(offer))],
    }


async def main(url: str, spec: dict) -> None:
    conns = []
    for offer in spec["clients"]:
        ws = await websockets.connect(url, open_timeout=10, close_timeout=5, max_size=None, **options(offer))
        conns.append(ws)
    binary = spec.get("binary", False)
    msgs = spec["send"]
    for m in msgs:
        await conns[0].send(m.encode() if binary else m)
    for i, (offer, ws) in enumerate(zip(spec["clients"], conns)):
        if offer == "off":
            assert not ws.protocol.extensions, f"client {i}: extension enabled"
        else:
            assert ws.protocol.extensions, f"client {i}: extension not enabled"
        for n, want in enumerate(msgs):
            got = await asyncio.wait_for(ws.recv(), 10)
            kind = bytes if binary else str
            assert isinstance(got, kind), f"client {i} message {n}: {type(got).__name__}"
            if binary:
                got = got.decode()
            assert got == want, f"client {i} message {n}: expected {want[:60]!r}, got {got[:60]!r}"
        print(ws.response.headers.get("Sec-WebSocket-Extensions", "-"))
    for ws in conns:
        await ws.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
