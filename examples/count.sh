#!/bin/sh
# Counts from 1 to 10, one number per second: each line becomes one WebSocket message.
# Run: wsbridge --port=8080 examples/count.sh   then open ws://localhost:8080/
for i in 1 2 3 4 5 6 7 8 9 10; do
  echo "$i"
  sleep 1
done
