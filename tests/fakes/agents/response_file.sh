#!/usr/bin/env bash
# An agent that writes its final message to a file ($1, like codex --output-last-message)
# and prints only progress noise on stdout.
echo "progress noise"
printf 'the final message\nsecond line\n' > "$1"
