#!/bin/sh
# Results on stdout, progress on stderr: with --passstderr the client sees both, as
# {"stream":"stdout"|"stderr","data":"..."} messages.
#   wsbridge --port=8080 --passstderr examples/progress.sh
# Each message is a file name; the answer is its line count.
while read -r name; do
    echo "counting $name" >&2
    if [ -r "$name" ]; then
        echo "$name: $(wc -l < "$name") lines"
    else
        echo "cannot read $name" >&2
    fi
done
