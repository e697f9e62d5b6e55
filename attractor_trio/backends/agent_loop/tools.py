"""The coding agent's seven tools (coding-agent-loop spec §3.3, §3.8, §5; contract.md §7, §9).

``read_file``, ``write_file``, ``edit_file``, ``shell``, ``grep``, ``glob`` act inside the
stage's working directory through a :class:`~.env.LocalEnvironment`; ``report_status`` writes
the stage's status file. Every call goes through the spec's pipeline
LOOKUP → VALIDATE → EXECUTE → TRUNCATE → RETURN, and every problem the model can fix (unknown
tool, bad arguments, missing file, path outside the workdir, non-zero exit, timeout) comes back
as an ``is_error`` :class:`ToolResult` whose text says what to do — never as an exception,
because the model is the only one who can react to it. ``trio.Cancelled`` is the exception:
it propagates, after the shell's process group is gone.

Arguments are checked against the same JSON Schemas the model is shown (:func:`tool_specs`),
so the two cannot drift apart. Truncation follows spec §5 to the letter (character limit
first, then line limit, with the spec's explicit ``[WARNING: Tool output was truncated…]``
marker), because a model that does not know its view is partial makes confident mistakes.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import trio
from attrs import frozen

from ...core.outcome import Outcome, StageStatus, StatusFileError
from ...persist.atomic import write_json_atomic
from ...providers.model import ToolCall, ToolSpec
from . import files
from .env import ExecResult, LocalEnvironment, ToolError
from .specs import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, tool_specs

__all__ = [
    "DEFAULT_CHAR_LIMIT",
    "LINE_LIMITS",
    "OUTPUT_LIMITS",
    "ToolBox",
    "ToolResult",
    "check_arguments",
    "truncate_lines",
    "truncate_output",
    "truncate_tool_output",
]

Mode = Literal["head_tail", "tail"]

#: Spec §5.2: per-tool character limit and which end to keep.
OUTPUT_LIMITS: Final[Mapping[str, tuple[int, Mode]]] = {
    "read_file": (50_000, "head_tail"),
    "shell": (30_000, "head_tail"),
    "grep": (20_000, "tail"),
    "glob": (20_000, "tail"),
    "edit_file": (10_000, "tail"),
    "write_file": (1_000, "tail"),
}
#: For tools the spec does not list (``report_status``, unknown names).
DEFAULT_CHAR_LIMIT: Final = (10_000, "tail")
#: Spec §5.3: line limits, applied after the character limit.
LINE_LIMITS: Final[Mapping[str, int]] = {"shell": 256, "grep": 200, "glob": 500}
_RAW_ARGUMENTS_KEY: Final = "_raw_arguments"  # set by adapters for unparsable arguments


@frozen
class ToolResult:
    """What the model gets back for one tool call."""

    content: str
    is_error: bool = False


# -- truncation (pure) -------------------------------------------------------------------------


def truncate_output(output: str, max_chars: int, mode: Mode) -> str:
    """Spec §5.1 ``truncate_output``, marker text verbatim."""
    if len(output) <= max_chars:
        return output
    removed = len(output) - max_chars
    if mode == "head_tail":
        half = max_chars // 2
        return (
            output[:half]
            + f"\n\n[WARNING: Tool output was truncated. {removed} characters were removed "
            "from the middle. The full output is available in the event stream. If you need "
            "to see specific parts, re-run the tool with more targeted parameters.]\n\n"
            + output[len(output) - half :]
        )
    return (
        f"[WARNING: Tool output was truncated. First {removed} characters were removed. "
        "The full output is available in the event stream.]\n\n" + output[-max_chars:]
    )


def truncate_lines(output: str, max_lines: int) -> str:
    """Spec §5.3 ``truncate_lines``: keep the first and last lines around a count."""
    lines = output.split("\n")
    if len(lines) <= max_lines:
        return output
    head_count = max_lines // 2
    tail_count = max_lines - head_count
    omitted = len(lines) - head_count - tail_count
    return (
        "\n".join(lines[:head_count])
        + f"\n[... {omitted} lines omitted ...]\n"
        + "\n".join(lines[len(lines) - tail_count :])
    )


def truncate_tool_output(tool: str, output: str) -> str:
    """Spec §5.3 pipeline: characters first (handles a 10 MB single line), then lines."""
    max_chars, mode = OUTPUT_LIMITS.get(tool, DEFAULT_CHAR_LIMIT)
    result = truncate_output(output, max_chars, mode)
    max_lines = LINE_LIMITS.get(tool)
    return result if max_lines is None else truncate_lines(result, max_lines)


# -- argument validation (pure) ----------------------------------------------------------------

_TYPE_NAMES: Final = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "a JSON object",
}


def check_arguments(
    tool: str, schema: Mapping[str, Any], args: Mapping[str, Any]
) -> dict[str, Any]:
    """``args`` checked against ``schema`` (types, ``required``, ``minimum``, unknown names),
    with defaults filled in and ``null`` treated as absent; raises :class:`ToolError`."""
    if _RAW_ARGUMENTS_KEY in args:
        raw = str(args[_RAW_ARGUMENTS_KEY])
        raise ToolError(
            f"{tool}: the arguments are not a valid JSON object (cut off by the output token "
            f"limit?): {raw[:200]!r}; call {tool} again with complete JSON arguments"
        )
    properties: Mapping[str, Any] = schema["properties"]
    unknown = sorted(set(args) - set(properties))
    if unknown:
        raise ToolError(
            f"{tool}: unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted arguments: {', '.join(properties)}"
        )
    values: dict[str, Any] = {}
    for name, prop in properties.items():
        value = args.get(name)
        if value is None:
            if name in schema.get("required", ()):
                raise ToolError(
                    f"{tool}: missing required argument {name!r}: {prop['description']}"
                )
            values[name] = copy.deepcopy(prop.get("default"))
        else:
            values[name] = _checked_value(tool, name, prop, value)
    return values


def _checked_value(tool: str, name: str, prop: Mapping[str, Any], value: Any) -> Any:
    kind = prop["type"]
    checked = _as_type(kind, value)
    if checked is None:
        raise ToolError(
            f"{tool}: argument {name!r} must be {_TYPE_NAMES[kind]}, got {_describe(value)}"
        )
    minimum = prop.get("minimum")
    if minimum is not None and checked < minimum:
        raise ToolError(f"{tool}: argument {name!r} must be at least {minimum}, got {checked}")
    return checked


def _as_type(kind: str, value: Any) -> Any:
    """``value`` as JSON-Schema type ``kind``, or ``None`` if it is not one (``3.0`` is an int)."""
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else None
    if kind == "object":
        return dict(value) if isinstance(value, Mapping) else None
    raise AssertionError(f"unsupported schema type {kind!r}")


def _describe(value: Any) -> str:
    names = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}
    kind = names.get(type(value), "a number" if isinstance(value, int | float) else "a value")
    shown = repr(value)
    return f"{kind} ({shown[:60]}{'…' if len(shown) > 60 else ''})"


# -- the tool box ------------------------------------------------------------------------------

_Handler = Callable[[dict[str, Any]], Awaitable[ToolResult]]


class ToolBox:
    """The seven tools bound to one :class:`LocalEnvironment`.

    ``default_timeout_ms``/``max_timeout_ms`` are the spec's SessionConfig
    ``default_command_timeout_ms`` and ``max_command_timeout_ms``.
    """

    def __init__(
        self,
        environment: LocalEnvironment,
        *,
        default_timeout_ms: int = DEFAULT_TIMEOUT_MS,
        max_timeout_ms: int = MAX_TIMEOUT_MS,
    ) -> None:
        self.environment = environment
        self._max_timeout_ms = max_timeout_ms
        self._specs = {spec.name: spec for spec in tool_specs(default_timeout_ms, max_timeout_ms)}
        self._reported: Outcome | None = None
        self._handlers: dict[str, _Handler] = {
            "read_file": self._read_file,
            "write_file": self._write_file,
            "edit_file": self._edit_file,
            "shell": self._shell,
            "grep": self._grep,
            "glob": self._glob,
            "report_status": self._report_status,
        }

    def specs(self) -> list[ToolSpec]:
        """The tools as offered to the model (copies: callers may not change ours)."""
        return copy.deepcopy(list(self._specs.values()))

    @property
    def reported(self) -> Outcome | None:
        """The outcome of the last successful ``report_status`` call, if any."""
        return self._reported

    async def execute(self, call: ToolCall) -> ToolResult:
        """Run one call; tool-level problems become ``is_error`` results, never exceptions."""
        try:
            result = await self._dispatch(call)
        except ToolError as exc:
            result = ToolResult(str(exc), is_error=True)
        except OSError as exc:
            result = ToolResult(_os_error_message(call, exc), is_error=True)
        except Exception as exc:  # a bug of ours must not end the agent's session
            message = f"{call.name}: internal error ({type(exc).__name__}: {exc}); try another way"
            result = ToolResult(message, is_error=True)
        self.environment.notify_output()
        return ToolResult(truncate_tool_output(call.name, result.content), result.is_error)

    async def _dispatch(self, call: ToolCall) -> ToolResult:
        spec = self._specs.get(call.name)
        if spec is None:
            raise ToolError(
                f"unknown tool {call.name!r}; available tools: {', '.join(self._specs)}"
            )
        arguments = check_arguments(call.name, spec.parameters, call.arguments)
        return await self._handlers[call.name](arguments)

    async def _read_file(self, args: dict[str, Any]) -> ToolResult:
        text = await trio.to_thread.run_sync(
            files.read_numbered,
            self.environment,
            args["file_path"],
            args["offset"],
            args["limit"],
            abandon_on_cancel=True,
        )
        return ToolResult(text)

    async def _write_file(self, args: dict[str, Any]) -> ToolResult:
        text = await trio.to_thread.run_sync(
            files.write_file, self.environment, args["file_path"], args["content"]
        )
        return ToolResult(text)

    async def _edit_file(self, args: dict[str, Any]) -> ToolResult:
        text = await trio.to_thread.run_sync(
            files.edit_file,
            self.environment,
            args["file_path"],
            args["old_string"],
            args["new_string"],
            args["replace_all"],
        )
        return ToolResult(text)

    async def _grep(self, args: dict[str, Any]) -> ToolResult:
        text = await trio.to_thread.run_sync(
            files.grep,
            self.environment,
            args["pattern"],
            args["path"],
            args["glob_filter"] or "",
            args["case_insensitive"],
            args["max_results"],
            abandon_on_cancel=True,
        )
        return ToolResult(text)

    async def _glob(self, args: dict[str, Any]) -> ToolResult:
        text = await trio.to_thread.run_sync(
            files.glob, self.environment, args["pattern"], args["path"], abandon_on_cancel=True
        )
        return ToolResult(text)

    async def _shell(self, args: dict[str, Any]) -> ToolResult:
        requested: int = args["timeout_ms"]
        timeout_ms = min(requested, self._max_timeout_ms)
        result = await self.environment.exec_command(args["command"], timeout_ms)
        text = format_exec(result, timeout_ms)
        if requested > timeout_ms:
            text += f"\n[timeout_ms {requested} is above the maximum; {timeout_ms} was used]"
        return ToolResult(text, is_error=result.timed_out or result.exit_code != 0)

    async def _report_status(self, args: dict[str, Any]) -> ToolResult:
        outcome = outcome_from_arguments(args)
        env = self.environment
        document = {**outcome.to_json(), **env.owner}
        await trio.to_thread.run_sync(_write_status, env, document)
        self._reported = outcome
        return ToolResult(
            f"Status recorded: outcome={outcome.value}. "
            "Finish with a short summary of what you did."
        )


def format_exec(result: ExecResult, timeout_ms: int) -> str:
    """What the model sees of a command: stdout, stderr, then how it ended.

    The ending comes last so that head/tail truncation always keeps it.
    """
    parts = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    text = "\n".join(parts) if parts else "(no output)"
    if result.timed_out:
        return (
            f"{text}\n[ERROR: Command timed out after {timeout_ms}ms. Partial output is shown "
            "above.\nYou can retry with a longer timeout by setting the timeout_ms parameter.]"
        )
    how = f"killed by {result.signal_name}; " if result.signal_name else ""
    return f"{text}\nExit code: {result.exit_code} ({how}duration {result.duration_ms} ms)"


def outcome_from_arguments(args: Mapping[str, Any]) -> Outcome:
    """``report_status`` arguments as an :class:`Outcome`, validated like a status file."""
    document = {key: value for key, value in args.items() if value is not None}
    try:
        outcome = Outcome.from_json(document, source="report_status")
    except StatusFileError as exc:
        raise ToolError(str(exc)) from None
    if outcome.status in (StageStatus.FAIL, StageStatus.RETRY) and not outcome.failure_reason:
        raise ToolError(
            f"report_status: outcome {outcome.status.value!r} needs a failure_reason: say in "
            "one sentence what failed, so the pipeline (and a human) can act on it"
        )
    return outcome


def _write_status(env: LocalEnvironment, document: dict[str, Any]) -> None:
    env.status_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(env.status_path, document)


def _os_error_message(call: ToolCall, exc: OSError) -> str:
    """``read_file: src/x.py: Permission denied`` — the path the model gave, not ours."""
    target = call.arguments.get("file_path") or call.arguments.get("path") or exc.filename
    reason = exc.strerror or str(exc)
    return f"{call.name}: {target}: {reason}" if target else f"{call.name}: {reason}"
