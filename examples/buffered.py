#!/usr/bin/env python3
"""A program that never flushes: one line a second, five times.

Run:  wsbridge --port=8080 --pty examples/buffered.py   (lines arrive one a second)
      wsbridge --port=8080 examples/buffered.py         (all five arrive at the end)

Under pipes Python block-buffers stdout; on the terminal --pty gives it, it
line-buffers, as it does in a shell.
"""
import time

for i in range(1, 6):
    print(f"tick {i}")
    time.sleep(1)
