#!/bin/sh
# count.sh [N] [DELAY]: prints 1 to N (default 10), one number per line, sleeping DELAY
# seconds (default 1) between lines. Each line becomes one WebSocket message.
#
# Run:  wsbridge --port=8080 examples/count.sh        then open ws://localhost:8080/
#       wsbridge --port=8080 examples/count.sh 5 0.5  (arguments after the program are its own)
#
# The shell's echo writes each line straight to the pipe, so nothing waits in a buffer.
n=${1:-10}
delay=${2:-1}
i=1
while [ "$i" -le "$n" ]; do
  echo "$i"
  i=$((i + 1))
  if [ "$i" -le "$n" ]; then
    sleep "$delay"
  fi
done
