#!/usr/bin/env bash
# A failing agent: $1 exit code, $2 text for stderr, optional $3 text for stdout.
[ -n "${3:-}" ] && printf '%s\n' "$3"
[ -n "$2" ] && printf '%s\n' "$2" >&2
exit "$1"
