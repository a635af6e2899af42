#!/usr/bin/env python3
"""The server's cost per echoed message, for profiling; not a test (BENCHMARKS.md quotes it).

    tools/permsg.py BIN [--count N] [--size BYTES] [--inflight K] [--callgrind OUT]
                        [--tls CERT KEY] [--churn] [--server-arg=ARG ...]

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
--server-arg=--metrics=127.0.0.1:0 to measure the cost of metrics). BIN
may also be websocketd: it then gets a free port, since it cannot take port 0. Needs
Python's `websockets` (tools/test.sh installs it), and for --callgrind valgrind (which it
does not: `apt-get install valgrind`).
"""
import argparse
import asyncio
import os
import queue
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


async def churn(url, pid, count):
    cpu0, sw0 = cpu_seconds(pid), switches(pid)
    for i in range(count):
        async with websockets.connect(url, compression=None, open_timeout=STEP, ssl=client_tls(url)) as ws:
            await ws.send(f"churn-{i}")
            assert await asyncio.wait_for(ws.recv(), STEP) == f"churn-{i}", "echo differs"
    return cpu_seconds(pid) - cpu0, switches(pid) - sw0


async def echo(url, pid, count, size, inflight):
    async with websockets.connect(
        url, max_size=None, compression=None, open_timeout=STEP, ssl=client_tls(url)
    ) as ws:
        msg = "x" * (size - 1)  # the newline wsbridge adds makes it `size` bytes on stdin
        await ws.send(msg)
        assert await asyncio.wait_for(ws.recv(), STEP) == msg
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sent = 0
        for _ in range(min(inflight, count)):
            await ws.send(msg)
            sent += 1
        for _ in range(count):
            assert await asyncio.wait_for(ws.recv(), STEP) == msg, "echo differs"
            if sent < count:
                await ws.send(msg)
                sent += 1
        return cpu_seconds(pid) - cpu0, time.monotonic() - t0


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
    a = ap.parse_args()
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
        cpu, wall = asyncio.run(echo(url, server.pid, a.count, a.size, a.inflight))
        print(
            f"{a.bin}: {a.count} x {a.size} B, {a.inflight} in flight: "
            f"{cpu / a.count * 1e6:.0f} us server CPU per message, {a.count / wall:.0f} msg/s"
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
