#!/usr/bin/env bash
# An agent that never finishes: records its pid and a background child's pid in $1, then waits.
sleep 300 &
echo "$$ $!" > "$1"
echo "started"
wait
