#!/usr/bin/env bash
# An agent that reports through a status file. $1: canonical|workdir|workdir_dot, $2: the JSON
# document, $3: exit code (default 0).
case $1 in
  canonical) target=$ATTRACTOR_STATUS_PATH ;;
  workdir) target=$ATTRACTOR_WORKDIR/status.json ;;
  workdir_dot) mkdir -p "$ATTRACTOR_WORKDIR/.attractor"; target=$ATTRACTOR_WORKDIR/.attractor/status.json ;;
esac
printf '%s' "$2" > "$target"
echo "reported via $1"
exit "${3:-0}"
