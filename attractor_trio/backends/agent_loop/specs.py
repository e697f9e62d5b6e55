"""What the model is told about each tool: names, descriptions, JSON-Schema parameters.

Decisions as data: :func:`~.tools.check_arguments` validates calls against these very schemas
(types, ``required``, ``minimum``, ``default``, no unknown names), so what the model is shown
and what is accepted cannot disagree. Parameter names follow the coding-agent-loop spec §3.3
(contract.md §9); the descriptions say what a model gets wrong without them (paths are relative
to the working directory, ``old_string`` must be unique, the ``N | `` prefix is not file text).
"""

from __future__ import annotations

from typing import Any, Final

from ...providers.model import ToolSpec

__all__ = ["DEFAULT_TIMEOUT_MS", "MAX_TIMEOUT_MS", "TOOL_NAMES", "tool_specs"]

#: Spec §5.4 ``default_command_timeout_ms`` / ``max_command_timeout_ms``.
DEFAULT_TIMEOUT_MS: Final = 10_000
MAX_TIMEOUT_MS: Final = 600_000
TOOL_NAMES: Final = (
    "read_file",
    "write_file",
    "edit_file",
    "shell",
    "grep",
    "glob",
    "report_status",
)

_FILE_PATH = {
    "type": "string",
    "description": "Path of the file, relative to the working directory "
    "(an absolute path must lie inside it).",
}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _file_tools() -> list[ToolSpec]:
    read_file = ToolSpec(
        "read_file",
        "Read a text file. Returns its lines numbered as 'N | text'; the 'N | ' prefix is not "
        "part of the file, so never copy it into edit_file. Returns up to `limit` lines "
        "starting at line `offset` (1-based) and says how to read further. Read a file before "
        "editing it.",
        _object(
            {
                "file_path": _FILE_PATH,
                "offset": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 1,
                    "description": "1-based line number to start reading from.",
                },
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 2000,
                    "description": "Maximum number of lines to return.",
                },
            },
            "file_path",
        ),
    )
    write_file = ToolSpec(
        "write_file",
        "Write a whole file, replacing it if it exists; parent directories are created. "
        "Prefer edit_file for changing part of an existing file.",
        _object(
            {"file_path": _FILE_PATH, "content": _string("The complete new file content.")},
            "file_path",
            "content",
        ),
    )
    edit_file = ToolSpec(
        "edit_file",
        "Replace an exact piece of text in a file. `old_string` must match the file exactly "
        "(whitespace and indentation included) and occur exactly once, unless `replace_all` "
        "is true; include a few surrounding lines to make it unique. Read the file first.",
        _object(
            {
                "file_path": _FILE_PATH,
                "old_string": _string("The exact text to replace (not empty)."),
                "new_string": _string("The replacement text."),
                "replace_all": {
                    "type": "boolean",
                    "default": False,
                    "description": "Replace every occurrence instead of requiring one.",
                },
            },
            "file_path",
            "old_string",
            "new_string",
        ),
    )
    return [read_file, write_file, edit_file]


def _shell_tool(default_timeout_ms: int, max_timeout_ms: int) -> ToolSpec:
    return ToolSpec(
        "shell",
        "Run a command with /bin/bash -c in the working directory and return its stdout, "
        "stderr and exit code. stdin is closed, so commands must not wait for input. The "
        f"command is killed after `timeout_ms` (default {default_timeout_ms}, at most "
        f"{max_timeout_ms}); background processes are killed when the command ends. "
        "Secret environment variables (*_API_KEY, *_TOKEN, …) are not available.",
        _object(
            {
                "command": _string("The bash command to run."),
                "timeout_ms": {
                    "type": "integer",
                    "minimum": 1,
                    "default": default_timeout_ms,
                    "description": "Timeout in milliseconds; raise it for slow builds or tests.",
                },
                "description": _string("A few words saying what the command does (for logs)."),
            },
            "command",
        ),
    )


def _search_tools() -> list[ToolSpec]:
    grep = ToolSpec(
        "grep",
        "Search file contents with a regular expression (Python `re` syntax). Returns "
        "matching lines as 'path:line:text', files in path order; skips .git and binary files.",
        _object(
            {
                "pattern": _string("Regular expression to search for."),
                "path": _string(
                    "File or directory to search, relative to the working directory.",
                    default=".",
                ),
                "glob_filter": _string(
                    "Only search files whose name matches this glob, e.g. '*.py' "
                    "(a pattern with '/' matches the path below `path`)."
                ),
                "case_insensitive": {
                    "type": "boolean",
                    "default": False,
                    "description": "Ignore case when matching.",
                },
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 100,
                    "description": "Stop after this many matching lines.",
                },
            },
            "pattern",
        ),
    )
    glob = ToolSpec(
        "glob",
        "Find files by name pattern, e.g. '**/*.py' (recursive) or 'src/*.ts'. Returns paths "
        "relative to the working directory, most recently modified first; directories end "
        "in '/'. Skips .git.",
        _object(
            {
                "pattern": _string("Glob pattern, relative to `path`."),
                "path": _string(
                    "Directory to search from, relative to the working directory.", default="."
                ),
            },
            "pattern",
        ),
    )
    return [grep, glob]


def _report_status_tool() -> ToolSpec:
    return ToolSpec(
        "report_status",
        "Record this pipeline stage's result; call it once when the task is done (or cannot "
        "be done), then finish with a short summary. The outcome decides which stage runs "
        "next.",
        _object(
            {
                "outcome": _string(
                    "success: the task is done; partial_success: done with gaps; retry: try "
                    "this stage again; fail: it cannot be done; skipped: nothing to do. Or "
                    "a custom lowercase value (e.g. needs_review) when the stage's "
                    "instructions name one; it counts as success.",
                ),
                "preferred_label": _string(
                    "Label of the outgoing edge to take, when the stage offers choices."
                ),
                "failure_reason": _string(
                    "Required for fail and retry: one sentence on what went wrong."
                ),
                "failure_class": _string(
                    "For fail/retry: transient_infra (worth retrying), deterministic (will "
                    "fail again), budget_exhausted, compilation_loop, structural."
                ),
                "context_updates": {
                    "type": "object",
                    "description": "Key/value pairs to store in the pipeline context.",
                },
                "notes": _string("Short notes for the run log."),
            },
            "outcome",
        ),
    )


def tool_specs(
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS, max_timeout_ms: int = MAX_TIMEOUT_MS
) -> list[ToolSpec]:
    """The seven tools in :data:`TOOL_NAMES` order (fresh objects on every call)."""
    return [
        *_file_tools(),
        _shell_tool(default_timeout_ms, max_timeout_ms),
        *_search_tools(),
        _report_status_tool(),
    ]
