#!/bin/sh
# One reading every DELAY seconds (default 1), forever: run it with --shared and every
# open browser sees the same readings.
#   wsbridge --port=8080 --shared examples/sensor.sh
# On a board, read a real sensor instead (e.g. /sys/class/thermal/thermal_zone0/temp).
delay=${1:-1}
n=0
while :; do
    n=$((n + 1))
    echo "{\"seq\":$n,\"temp\":$((200 + n % 7))}"
    sleep "$delay"
done
