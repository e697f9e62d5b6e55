#!/usr/bin/env bash
# Claude Code style `--output-format stream-json`: JSON lines ending in a result event.
echo '{"type":"system","subtype":"init"}'
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"working"}]}}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"final answer\nwith two lines"}'
