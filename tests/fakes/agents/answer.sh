#!/usr/bin/env bash
# A well-behaved agent: reads the prompt file ($1), reports progress on stderr, answers on stdout.
# Also prints what it was given, so tests can check argv, cwd and the environment.
prompt_file=$1
echo "thinking about $(wc -c < "$prompt_file") bytes of prompt" >&2
echo "args: $*"
echo "cwd: $PWD"
echo "status path: $ATTRACTOR_STATUS_PATH"
echo "claudecode: ${CLAUDECODE:-unset}"
echo "answer: $(head -n 1 "$prompt_file")"
