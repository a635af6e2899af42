#!/usr/bin/env python3
"""A program that never flushes: `buffered.py [N] [DELAY]` prints tick 1 … tick N
(default 5), DELAY seconds apart (default 1).

Run:  wsbridge --port=8080 --pty examples/buffered.py   (lines arrive one a second)
      wsbridge --port=8080 examples/buffered.py         (all five arrive at the end)

Under pipes Python block-buffers stdout; on the terminal --pty gives it, it
line-buffers, as it does in a shell.
"""
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
for i in range(1, n + 1):
    print(f"tick {i}")
    if i < n:
        time.sleep(delay)
