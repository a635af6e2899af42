#!/bin/sh
# A chat room: with --shared=ids every line arrives as "ID message"; each one is printed
# to everyone as "ID: message". "/who" is answered to its sender only ("@ID text").
#   wsbridge --port=8080 --shared=ids examples/chat.sh
while read -r id msg; do
    case "$msg" in
        /who) echo "@$id you are $id" ;;
        *) echo "$id: $msg" ;;
    esac
done
