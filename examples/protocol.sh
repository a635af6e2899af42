#!/bin/sh
# Says which subprotocol the client and wsbridge agreed on, then echoes.
#   wsbridge --port=8080 --subprotocol=chat.v2,chat.v1 examples/protocol.sh
# A browser asks with: new WebSocket("ws://localhost:8080/", ["chat.v1"])
echo "speaking ${WEBSOCKET_PROTOCOL:-no subprotocol}"
exec cat
