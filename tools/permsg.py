#!/usr/bin/env python3
"""The server's cost per echoed message, for profiling; not a test (BENCHMARKS.md quotes it).

    tools/permsg.py BIN [--count N] [--size BYTES] [--inflight K] [--callgrind OUT]
                        [--tls CERT KEY] [--churn] [--server-arg=ARG ...]
                        [--payload x|json|random] [--compress] [--memory N] [--fanout N]

Starts `BIN --port=0 --address=127.0.0.1 --loglevel=error cat` on loopback, sends N text
messages of BYTES bytes (one line each) with K in flight, checks every echo, and prints the
server's CPU time per message (utime+stime from /proc/PID/stat, in 10 ms ticks: use enough
messages). With --callgrind the server runs under `valgrind --tool=callgrind` and its
instruction counts go to OUT (read them with callgrind_annotate); its CPU time is then
valgrind's. With --tls the server runs with `--ssl` and that certificate and key, and the
client (which does not check the certificate) speaks wss://. With --churn it makes N
connections one after another instead (connect, one echo, close) and prints the server's
CPU time and context switches (all threads, /proc/PID/task/*/status) per connection.
--server-arg adds one flag to the server's command line (repeatable; e.g.
--server-arg=--metrics=127.0.0.1:0 to measure the cost of metrics). --payload picks the
message: `x` repeated (the default), JSON-like text (repetitive, as a sensor's readings),
or random bytes (binary messages; give the server --server-arg=--framing=lenprefix, where
each message is echoed as it came). --compress has the client offer permessage-deflate
(and gives the server --compress); the bytes on the wire each way, counted under the
client's WebSocket layer, are printed per message. --memory N opens N connections instead
and prints the server's private memory (RssAnon) per connection when idle and after each
echoed one message of --size bytes (then idle again). --fanout N runs the server with
--shared and N clients; one of them sends --count messages, every client receives each,
and the server CPU time is printed per delivered message (count x N), with the server's
private memory per client 1 s after the burst (against before the clients connected). BIN
may also be websocketd: it then gets a free port, since it cannot take port 0. Needs
Python's `websockets` (tools/test.sh installs it), and for --callgrind valgrind (which it
does not: `apt-get install valgrind`).
"""
import argparse
import asyncio
import json
import os
import queue
import random
import re
import socket
import ssl
import subprocess
import threading
import time

import websockets

STEP = 60  # seconds for any one wait; callgrind runs the server ~50x slower


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if "ctxt_switches" in line:  # voluntary and nonvoluntary
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that just ended
            pass
    return total


def client_tls(url):
    """For wss://: TLS without checking the certificate (the server's is self-signed)."""
    if not url.startswith("wss:"):
        return None
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls


class Wire:
    """Bytes on the wire each way, counted where the client's WebSocket layer meets TCP."""

    def __init__(self, ws):
        self.sent = self.received = 0
        write, received = ws.transport.write, ws.data_received

        def counted_write(data):
            self.sent += len(data)
            write(data)

        def counted_received(data):
            self.received += len(data)
            received(data)

        ws.transport.write = counted_write
        ws.data_received = counted_received


def payload(kind, size, seed=0):
    """One message of `size` bytes on the program's stdin (text: the newline included);
    `seed` varies it (the echo benchmark cycles through 64 of them, 64 KiB at 1 KiB each,
    more than a 32 KiB compression window, so no message is a copy of one in the window)."""
    if kind == "random":
        return random.Random(seed).randbytes(size)
    if kind == "json":
        rng, rows, i = random.Random(seed), [], seed * 100
        while len(",".join(rows)) < size:
            rows.append(json.dumps({"id": i, "sensor": f"temp-{i % 4}", "value": round(rng.uniform(15, 30), 2),
                                    "unit": "C", "ok": True}, separators=(",", ":")))
            i += 1
        return ",".join(rows)[: size - 1]
    return "x" * (size - 1)  # the newline wsbridge adds makes it `size` bytes on stdin


def rss_anon_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


async def memory(url, pid, conns, size, kind, compression):
    msg = payload(kind, size)
    base = rss_anon_kib(pid)
    sockets = []
    for _ in range(conns):
        sockets.append(await websockets.connect(url, max_size=None, compression=compression, open_timeout=STEP))
    await asyncio.sleep(1)
    idle = rss_anon_kib(pid)
    for ws in sockets:
        await ws.send(msg)
    for ws in sockets:
        assert await asyncio.wait_for(ws.recv(), STEP) == msg, "echo differs"
    await asyncio.sleep(1)
    burst = rss_anon_kib(pid)
    for ws in sockets:
        await ws.close()
    return (idle - base) / conns, (burst - base) / conns


async def fanout(url, pid, clients, count, size, kind, compression):
    msgs = [payload(kind, size, seed) for seed in range(64)]
    base = rss_anon_kib(pid)
    sockets = [
        await websockets.connect(url, max_size=None, compression=compression, open_timeout=STEP)
        for _ in range(clients)
    ]
    wires = [Wire(ws) for ws in sockets]

    async def receive(ws):
        for i in range(count):
            assert await asyncio.wait_for(ws.recv(), STEP) == msgs[i % 64], "fan-out differs"

    cpu0 = cpu_seconds(pid)
    readers = [asyncio.create_task(receive(ws)) for ws in sockets]
    for i in range(count):
        await sockets[0].send(msgs[i % 64])
        if i % 16 == 15:
            await asyncio.sleep(0)  # let the readers keep up
    await asyncio.gather(*readers)
    cpu = cpu_seconds(pid) - cpu0
    down = sum(w.received for w in wires)
    await asyncio.sleep(1)
    after = (rss_anon_kib(pid) - base) / clients
    for ws in sockets:
        await ws.close()
    return cpu, down, after


async def churn(url, pid, count):
    cpu0, sw0 = cpu_seconds(pid), switches(pid)
    for i in range(count):
        async with websockets.connect(url, compression=None, open_timeout=STEP, ssl=client_tls(url)) as ws:
            await ws.send(f"churn-{i}")
            assert await asyncio.wait_for(ws.recv(), STEP) == f"churn-{i}", "echo differs"
    return cpu_seconds(pid) - cpu0, switches(pid) - sw0


async def echo(url, pid, count, size, inflight, kind="x", compression=None):
    async with websockets.connect(
        url, max_size=None, compression=compression, open_timeout=STEP, ssl=client_tls(url)
    ) as ws:
        if compression:
            answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert answer.startswith("permessage-deflate"), f"compression not negotiated: {answer!r}"
        msgs = [payload(kind, size, seed) for seed in range(64)]
        await ws.send(msgs[0])
        assert await asyncio.wait_for(ws.recv(), STEP) == msgs[0]
        wire = Wire(ws)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sent = 0
        for _ in range(min(inflight, count)):
            await ws.send(msgs[sent % 64])
            sent += 1
        for i in range(count):
            assert await asyncio.wait_for(ws.recv(), STEP) == msgs[i % 64], "echo differs"
            if sent < count:
                await ws.send(msgs[sent % 64])
                sent += 1
        return cpu_seconds(pid) - cpu0, time.monotonic() - t0, wire


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--inflight", type=int, default=2)
    ap.add_argument("--callgrind", metavar="OUT")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--churn", action="store_true")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    ap.add_argument("--payload", choices=["x", "json", "random"], default="x")
    ap.add_argument("--compress", action="store_true")
    ap.add_argument("--memory", type=int, metavar="N")
    ap.add_argument("--fanout", type=int, metavar="N")
    a = ap.parse_args()
    if a.fanout:
        a.server_arg.append("--shared")
    compression = "deflate" if a.compress else None
    if a.compress:
        a.server_arg.append("--compress")
    websocketd = os.path.basename(a.bin) == "websocketd"
    port = 0
    if websocketd:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = [a.bin, f"--port={port}", "--address=127.0.0.1", "--loglevel=error"]
    if a.tls:
        cmd += ["--ssl", f"--sslcert={a.tls[0]}", f"--sslkey={a.tls[1]}"]
    cmd += a.server_arg
    cmd.append("cat")
    if a.callgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={a.callgrind}"] + cmd
    server = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines = queue.Queue()

    def drain():  # the whole of stderr, so the server never blocks on it
        for line in server.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + STEP
        url = f"{'wss' if a.tls else 'ws'}://127.0.0.1:{port}/" if websocketd else None
        while websocketd and not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"permsg: websocketd is not listening on port {port}")
            time.sleep(0.01)
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise SystemExit(f"permsg: {a.bin} printed no 'listening on' line within {STEP} s")
            m = re.search(r"listening on (wss?://\S+)", line)
            url = m and m.group(1)
        if a.churn:
            t0 = time.monotonic()
            cpu, sw = asyncio.run(churn(url, server.pid, a.count))
            print(
                f"{a.bin}: {a.count} connections one after another: "
                f"{cpu / a.count * 1e6:.0f} us server CPU and {sw / a.count:.1f} context switches "
                f"per connection, {a.count / (time.monotonic() - t0):.0f} conn/s"
            )
            return
        if a.fanout:
            cpu, down, after = asyncio.run(
                fanout(url, server.pid, a.fanout, a.count, a.size, a.payload, compression)
            )
            n = a.count * a.fanout
            print(
                f"{a.bin} {' '.join(a.server_arg)}: {a.count} x {a.size} B {a.payload} to {a.fanout} clients: "
                f"{cpu / n * 1e6:.1f} us server CPU per delivered message, {down / n:.0f} wire bytes each, "
                f"{after:.1f} KiB private memory per client after the burst"
            )
            return
        if a.memory:
            idle, burst = asyncio.run(memory(url, server.pid, a.memory, a.size, a.payload, compression))
            print(
                f"{a.bin} {' '.join(a.server_arg)}: {a.memory} connections: {idle:.1f} KiB private memory "
                f"per idle connection, {burst:.1f} KiB after one {a.size} B {a.payload} echo each"
            )
            return
        cpu, wall, wire = asyncio.run(echo(url, server.pid, a.count, a.size, a.inflight, a.payload, compression))
        print(
            f"{a.bin} {' '.join(a.server_arg)}: {a.count} x {a.size} B {a.payload}, {a.inflight} in flight: "
            f"{cpu / a.count * 1e6:.1f} us server CPU per message, {a.count / wall:.0f} msg/s, "
            f"wire bytes per message {wire.sent / a.count:.0f} up, {wire.received / a.count:.0f} down"
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=STEP)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
