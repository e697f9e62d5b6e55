#!/usr/bin/env bash
# A wrapper whose real agent is not installed: bash reports "command not found", exit 127.
no-such-agent-cli-xyz -p "$@"
