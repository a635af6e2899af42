#!/bin/sh
# Greeter: says who is connected (from the CGI-style environment wsbridge sets), then
# answers every message with "Hello, <message>!".
#
# Run:  wsbridge --port=8080 examples/greeter.sh
# Try:  ws://localhost:8080/?lang=en   (the part after ? arrives in QUERY_STRING, raw)
echo "you are $REMOTE_ADDR, query: $QUERY_STRING"
while IFS= read -r line || [ -n "$line" ]; do
  echo "Hello, $line!"
done
