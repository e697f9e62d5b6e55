"""Tool call hooks (spec §9.7, contract.md §9): shell commands around every agent tool call.

``tool_hooks.pre`` runs before a call and can veto it (non-zero exit); ``tool_hooks.post``
runs after it for logging and audit and can never block. A node's attribute overrides the
graph's, key by key — a node may set ``tool_hooks.pre=""`` to switch a graph-wide hook off.

How a hook runs (decided): ``bash -c <hook>`` in the workdir, in its own process group through
:func:`~attractor_trio.backends.executors.run_stage_process` (locally a process group; in an
agent session on a Ray node, one led by the orphan guard), so a cancelled stage kills it like
any stage process. That function gives processes ``/dev/null`` as stdin, so the metadata JSON
is written to ``<stage_dir>/hooks/input.json`` and a two-line wrapper
(``exec bash -c "$1" <"$0"``) makes it the hook's stdin; the hook text itself runs unchanged.
Hook stdout/stderr are appended to ``<stage_dir>/hooks/stdout.log``/``stderr.log``, and every
hook run leaves one line in ``<stage_dir>/hooks.log``. A hook has no timeout of its own: the
node's ``timeout`` bounds it with the rest of the attempt.

A pre hook that cannot even be started vetoes the call (fail closed: a guard that did not run
must not be taken for a guard that said yes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from ...aio.process import ProcessResult
from ...core import redaction
from ...persist.atomic import utc_timestamp, write_text_atomic
from ...persist.logtext import decode_tail, file_size
from ...providers.model import ToolCall
from ..executors.base import run_stage_process

__all__ = [
    "HOOKS_LOG",
    "HookRunner",
    "ToolHooks",
    "resolve_tool_hooks",
    "veto_message",
]

HOOKS_LOG: Final = "hooks.log"
PRE_KEY: Final = "tool_hooks.pre"
POST_KEY: Final = "tool_hooks.post"
#: Makes the input file the hook's stdin without touching the hook text ($0 file, $1 hook).
_WRAPPER: Final = 'exec bash -c "$1" <"$0"'
_TAIL_BYTES: Final = 600


@frozen
class ToolHooks:
    """The two hook commands of a stage; ``""`` means no hook."""

    pre: str = ""
    post: str = ""

    @property
    def active(self) -> bool:
        return bool(self.pre.strip() or self.post.strip())


def resolve_tool_hooks(node_attrs: Mapping[str, str], graph_attrs: Mapping[str, str]) -> ToolHooks:
    """S9.7-01: each key from the node when it declares it (even empty), else from the graph."""

    def pick(key: str) -> str:
        value = node_attrs[key] if key in node_attrs else graph_attrs.get(key, "")
        return value.strip()

    return ToolHooks(pre=pick(PRE_KEY), post=pick(POST_KEY))


def veto_message(exit_code: int, signal_name: str, stderr_tail: str) -> str:
    """The error result the model gets for a vetoed call (pure, so tests pin its wording)."""
    how = f"killed by {signal_name}" if signal_name else f"exit {exit_code}"
    tail = stderr_tail.strip()
    return f"tool call blocked by tool_hooks.pre ({how})" + (f": {tail}" if tail else "")


@frozen
class _HookRun:
    exit_code: int
    signal_name: str
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class HookRunner:
    """Runs one stage's hooks. ``env`` is the full process environment (os + ``ATTRACTOR_*``)."""

    def __init__(
        self,
        hooks: ToolHooks,
        *,
        workdir: Path,
        stage_dir: Path,
        env: Mapping[str, str],
        run_id: str,
        node_id: str,
        kill_grace: float = 2.0,
        on_output: Callable[[], None] | None = None,
    ) -> None:
        self.hooks = hooks
        self.workdir = workdir
        self.stage_dir = stage_dir
        self.env = dict(env)
        self.run_id = run_id
        self.node_id = node_id
        self.kill_grace = kill_grace
        self.on_output = on_output

    @property
    def log_path(self) -> Path:
        return self.stage_dir / HOOKS_LOG

    async def before(self, call: ToolCall) -> str | None:
        """Run the pre hook: ``None`` lets the call proceed, else the veto message."""
        if not self.hooks.pre:
            return None
        try:
            run = await self._run("pre", self.hooks.pre, call, self._payload(call))
        except OSError as exc:
            message = f"tool call blocked: tool_hooks.pre could not be started: {exc}"
            self._log("pre", call, message)
            return message
        if run.ok:
            self._log("pre", call, "exit 0")
            return None
        message = veto_message(run.exit_code, run.signal_name, run.stderr_tail)
        self._log("pre", call, f"vetoed: {message}")
        return message

    async def after(self, call: ToolCall, content: str, is_error: bool) -> None:
        """Run the post hook; its failures are logged, never raised (S9.7-03)."""
        if not self.hooks.post:
            return
        payload = {**self._payload(call), "result": content, "is_error": is_error}
        try:
            run = await self._run("post", self.hooks.post, call, payload)
        except OSError as exc:
            self._log("post", call, f"failed to start (not blocking): {exc}")
            return
        if run.ok:
            self._log("post", call, "exit 0")
        else:
            how = f"killed by {run.signal_name}" if run.signal_name else f"exit {run.exit_code}"
            tail = f": {run.stderr_tail.strip()}" if run.stderr_tail.strip() else ""
            self._log("post", call, f"failed, {how} (not blocking){tail}")

    def _payload(self, call: ToolCall) -> dict[str, Any]:
        return {
            "tool": call.name,
            "arguments": call.arguments,
            "node_id": self.node_id,
            "run_id": self.run_id,
        }

    async def _run(
        self, phase: str, hook: str, call: ToolCall, payload: Mapping[str, Any]
    ) -> _HookRun:
        folder = self.stage_dir / "hooks"
        folder.mkdir(parents=True, exist_ok=True)
        input_path = folder / "input.json"
        write_text_atomic(input_path, json.dumps(payload, ensure_ascii=False), durable=False)
        stderr_path = folder / "stderr.log"
        env = {
            **self.env,
            "ATTRACTOR_TOOL_NAME": call.name,
            "ATTRACTOR_TOOL_CALL_ID": call.id,
            "ATTRACTOR_HOOK_PHASE": phase,
        }
        result = await run_stage_process(
            ["bash", "-c", _WRAPPER, str(input_path), hook],
            cwd=self.workdir,
            env=env,
            stdout_path=folder / "stdout.log",
            stderr_path=stderr_path,
            kill_grace=self.kill_grace,
            on_output=self.on_output,
        )
        return _HookRun(result.exit_code, result.signal_name, _tail(stderr_path, result))

    def _log(self, phase: str, call: ToolCall, what: str) -> None:
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        line = f"{utc_timestamp()} {phase} {call.name} {call.id}: {what}\n"
        line = redaction.current().text(line)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line)


def _tail(path: Path, result: ProcessResult) -> str:
    """The end of what this hook run wrote to the shared stderr log."""
    size = file_size(path)
    count = min(result.stderr_bytes, _TAIL_BYTES)
    if count <= 0:
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, size - count))
        return decode_tail(f.read(count)).strip()
