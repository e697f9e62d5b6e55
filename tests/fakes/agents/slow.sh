#!/usr/bin/env bash
# A working agent that streams: $1 lines, one every $2 seconds, then a final answer.
for i in $(seq 1 "$1"); do
  echo "step $i"
  sleep "$2"
done
echo "done after $1 steps"
