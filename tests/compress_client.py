#!/usr/bin/env python3
"""permessage-deflate checks with Python's `websockets` client (which offers it by default).

Usage: compress_client.py URL SPEC_JSON
  SPEC_JSON: {"send": [...], "expect": [...], "binary": false}
  Strings are sent as text, or with "binary" as UTF-8 bytes in binary messages; after
  sending them all, the client reads len(expect) messages and compares.
  wss:// URLs are not verified (the tests use a self-signed CA).
Exits 0 when the extension was answered and every message matched; prints what failed.
"""
import asyncio
import json
import ssl
import sys

import websockets


async def main(url: str, spec: dict) -> None:
    tls = None
    if url.startswith("wss://"):
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    async with websockets.connect(url, ssl=tls, open_timeout=10, close_timeout=5, max_size=None) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert answer.startswith("permessage-deflate"), f"extension not answered: {answer!r}"
        assert ws.protocol.extensions, "websockets did not enable the extension"
        for m in spec["send"]:
            await ws.send(m.encode() if spec.get("binary") else m)
        for want in spec["expect"]:
            got = await asyncio.wait_for(ws.recv(), 10)
            if spec.get("binary"):
                assert isinstance(got, bytes), f"expected binary, got {got!r}"
                got = got.decode()
            assert got == want, f"expected {want[:80]!r}, got {got[:80]!r}"
    print("ok", answer)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
