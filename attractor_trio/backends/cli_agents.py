"""CLI-agent codergen backend (contract.md §3, §7 ``kind: cli``): a coding agent as a process group.

Claude Code, Codex, Gemini CLI and the like are run the way tool stages run: in their own
process group (:func:`~attractor_trio.aio.process.run_in_process_group`), in the attempt's
workdir, with stdin closed, the ``ATTRACTOR_*`` environment, and stdout/stderr going to
``stdout.log``/``stderr.log`` in the stage directory. Output growth is progress for the stall
watchdog, so an agent that streams stays alive and a silent, hung one does not. The node
``timeout`` and run cancellation are the attempt scope's business; the group is killed
(SIGTERM, grace, SIGKILL) before the cancellation propagates. The provider's own ``timeout``
bounds the agent on top of that and fails the attempt as ``transient_infra``.

The provider's ``command`` is a shell-style template, split with :func:`shlex.split` and never
given to a shell, with these placeholders substituted inside each word:

* ``{prompt_file}`` — ``<stage_dir>/prompt.md`` (the prompt itself never goes on argv: one
  argument is limited to 128 KiB on Linux, and a prompt with a fidelity preamble can be larger);
* ``{model}`` — the node's ``llm_model`` (after the stylesheet), else the provider's ``model``;
* ``{stage_dir}``, ``{workdir}`` — the attempt's stage directory and working directory.

Any other ``{name}`` is a config error, so a typo fails at load time and not as an agent that
was told ``--model {modle}``. CLIs that want the prompt on stdin go through a shell explicitly::

    command: bash -c 'claude -p --model "$1" < "$2"' claude {model} {prompt_file}
    command: bash -c 'codex exec -m "$1" --output-last-message "$2" - < "$3"' codex
             {model} {stage_dir}/response.md {prompt_file}

How an attempt ends (decided; table-tested in ``tests/test_cli_agents.py``):

* **exit 0** → the agent's final text is returned and the codergen handler does the rest:
  contract.md §3 status ingestion (one ``status_ingestion_decision``; a valid status decides,
  an invalid canonical file fails ``deterministic``), ``response.md``, ``last_response``.
  The text is ``<stage_dir>/response.md`` when the agent wrote one (Codex'
  ``--output-last-message``), else the ``result`` of a final ``{"type": "result"}`` JSON line
  (Claude Code's ``--output-format json|stream-json``), else the last 64 KiB of stdout.
  Leaving ingestion to the handler here is what keeps it at exactly one event per attempt:
  the handler ingests whenever a backend returns text.
* **non-zero exit, killed, or provider timeout** → this backend ingests the status files
  itself (same rules, same event) and returns a final :class:`Outcome`: a valid status
  decides — the agent may have reported and then exited badly; otherwise ``fail`` with a
  reason naming the exit code and the tail of stderr, classified by
  :func:`classify_agent_failure`.
* ``auto_status`` changes nothing here: exit 0 without a status file is ``success`` either way
  (the returned text is the codergen handler's status, as in spec §4.5), and a failed agent
  process is never turned into ``success`` — ``auto_status`` says what to do when a handler
  reports nothing, and a crashed or rate-limited agent has reported something.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import trio
from attrs import frozen

from ..aio.process import ProcessResult
from ..core.attempt import AttemptInfo, current_attempt
from ..core.failures import DETERMINISTIC, STRUCTURAL, TRANSIENT_INFRA, classify_reason
from ..core.outcome import Outcome, StageStatus, StatusFileError
from ..errors import ConfigError
from ..persist.atomic import write_text_atomic
from ..persist.logtext import decode_tail, file_size, tail_text
from ..persist.status import (
    clear_stale_status,
    ingest_status,
)
from ..runconfig import ProviderConfig
from ..stage_env import stage_environment
from .executors.base import run_stage_process

if TYPE_CHECKING:
    from ..context import Context
    from ..dot.graph import Node

__all__ = [
    "PLACEHOLDERS",
    "RESPONSE_LIMIT_BYTES",
    "AgentExit",
    "CliAgentBackend",
    "CommandTemplate",
    "agent_failure_outcome",
    "classify_agent_failure",
    "final_text",
]

PLACEHOLDERS: Final = ("prompt_file", "model", "stage_dir", "workdir")
#: At most this much of the end of stdout becomes the response when the agent wrote no file.
RESPONSE_LIMIT_BYTES: Final = 64 * 1024
#: Inherited variables a nested agent must not see: Claude Code refuses to start when it
#: believes it runs inside another Claude Code session (running the engine from one is common).
STRIPPED_ENV: Final = ("CLAUDECODE",)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMAND_NOT_FOUND = re.compile(r"([^\s:'\"]+): (?:command )?not found", re.IGNORECASE)
# commander (Claude Code), yargs (Gemini CLI), clap (Codex), argparse, getopt, cobra.
_BAD_ARGUMENTS = re.compile(
    r"\b(?:unknown|unrecognized|unrecognised|unexpected|invalid)[ -](?:option|argument|flag)s?\b"
    r"|\bunknown arguments?\b|\bunknown (?:sub)?command\b",
    re.IGNORECASE,
)
_USAGE_LINE = re.compile(r"^\s*usage:", re.IGNORECASE | re.MULTILINE)
_RATE_LIMITED = re.compile(
    r"\brate[ _-]?limit|\b429\b|\boverloaded\b|\btoo many requests\b", re.IGNORECASE
)


@frozen
class CommandTemplate:
    """A provider ``command`` split into words; placeholders are checked once, at load time."""

    words: tuple[str, ...]

    @classmethod
    def parse(cls, command: str, *, provider: str) -> CommandTemplate:
        """Raises :class:`ConfigError` for an empty or unparsable command or an unknown ``{x}``."""
        where = f"provider '{provider}' (kind: cli): command"
        try:
            words = tuple(shlex.split(command))
        except ValueError as exc:
            raise ConfigError(f"{where}: cannot split {command!r} into words: {exc}") from None
        if not words:
            raise ConfigError(
                f"{where} is empty; set it to the agent's command line, e.g. "
                "command: my-agent --model {model} {prompt_file}"
            )
        for word in words:
            for name in _PLACEHOLDER.findall(word):
                if name not in PLACEHOLDERS:
                    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                    raise ConfigError(f"{where}: unknown placeholder {{{name}}}; known: {known}")
        return cls(words)

    @property
    def uses_model(self) -> bool:
        return any("{model}" in word for word in self.words)

    def render(self, values: Mapping[str, str]) -> list[str]:
        """The argv: each placeholder replaced inside its word (a path with spaces stays one)."""
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in self.words]


@final
class CliAgentBackend:
    """A :class:`~attractor_trio.providers.base.CodergenBackend` that runs a CLI coding agent."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.template = CommandTemplate.parse(config.command, provider=config.name)

    def runs_one_process(self, node: Node) -> bool:
        """The attempt is the agent's process (see ``CodergenHandler.runs_one_process``)."""
        return True

    def secret_env_names(self) -> list[str]:
        """The provider's key variable: its value is redacted (contract.md §10)."""
        return [self.config.api_key_env] if self.config.api_key_env else []

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        attempt = _require_attempt(node)
        model = node.llm_model or self.config.model
        if self.template.uses_model and not model:
            return _failed(
                f"provider '{self.config.name}': the command uses {{model}} but node "
                f"'{node.id}' has no llm_model and the provider no model; set one of them",
                STRUCTURAL,
            )
        try:
            logs = _prepare(attempt, prompt)
        except StatusFileError as exc:
            return _failed(str(exc), DETERMINISTIC)
        argv = self.template.render(
            {
                "prompt_file": str(logs.prompt_file),
                "model": model,
                "stage_dir": str(attempt.stage_dir),
                "workdir": str(attempt.workdir),
            }
        )
        try:
            result = await self._run_process(argv, attempt, logs)
        except OSError as exc:
            return _failed(*_start_failure(argv[0], exc, attempt.workdir))
        if result is not None and result.exit_code == 0:
            return await trio.to_thread.run_sync(logs.final_text)
        observed = logs.observe(argv[0], result, self.config.timeout)
        decision = await ingest_status(attempt)
        return agent_failure_outcome(observed, decision.status_or_error())

    async def _run_process(
        self, argv: list[str], attempt: AttemptInfo, logs: _AttemptLogs
    ) -> ProcessResult | None:
        """The agent's process result; ``None`` when the provider's ``timeout`` ran out."""
        timeout = self.config.timeout
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            return await run_stage_process(
                argv,
                cwd=attempt.workdir,
                env=agent_env(attempt, self.config.api_key_env),
                stdout_path=logs.stdout.path,
                stderr_path=logs.stderr.path,
                kill_grace=attempt.kill_grace,
                on_output=attempt.progress,
            )
        return None


def agent_env(attempt: AttemptInfo, api_key_env: str = "") -> dict[str, str]:
    """The stage environment (contract.md §10) with the provider's own key, minus
    :data:`STRIPPED_ENV` (which a ``--pass-env`` glob could otherwise bring in)."""
    env = stage_environment(attempt, extra_names=(api_key_env,))
    return {k: v for k, v in env.items() if k not in STRIPPED_ENV}


def _require_attempt(node: Node) -> AttemptInfo:
    attempt = current_attempt()
    if attempt is None:
        raise RuntimeError(
            f"CliAgentBackend.run for node '{node.id}' was called outside an attempt: run it "
            "through attractor_trio.run(), or set one with handlers.base.set_attempt()"
        )
    return attempt


def _failed(reason: str, failure_class: str) -> Outcome:
    return Outcome(StageStatus.FAIL, failure_reason=reason, failure_class=failure_class)


# --- what was observed, and the pure decisions ------------------------------------------------


@frozen
class AgentExit:
    """How the agent process ended, as the decision functions need it (no IO, no trio).

    ``exit_code`` is ``None`` when the provider's timeout (``timeout_s``) stopped the agent.
    """

    program: str
    exit_code: int | None
    stderr_tail: str = ""
    stdout_tail: str = ""
    signal_name: str = ""
    timeout_s: float | None = None

    def summary(self) -> str:
        """``agent X exited with code 1: <stderr tail>`` — stdout's tail when stderr is empty."""
        if self.exit_code is None:
            head = f"agent {self.program} timed out after {self.timeout_s:g}s (provider timeout)"
        elif self.signal_name:
            head = f"agent {self.program} killed by signal {self.signal_name}"
        else:
            head = f"agent {self.program} exited with code {self.exit_code}"
        if self.stderr_tail:
            return f"{head}: {self.stderr_tail}"
        if self.stdout_tail:
            return f"{head} (stderr empty; end of stdout: {self.stdout_tail})"
        return f"{head} (no output)"


def classify_agent_failure(observed: AgentExit) -> tuple[str, str]:
    """``(failure_reason, failure_class)`` for an agent that ended badly without a status file.

    Rules, first match wins: provider timeout → ``transient_infra``; exit 127 → ``structural``
    "agent command not found" (naming the missing program when the shell said which); 126 →
    ``structural`` not executable; an argument complaint, or exit 2 with a usage line →
    ``structural`` (the provider's command does not fit the installed CLI: fix the config);
    rate-limit text → ``transient_infra``; else :func:`classify_reason` on the reason. A
    ``deterministic`` *guess* is returned as ``""`` (unhinted): contract.md §5 blocks retries only
    for explicit classes, and one more attempt is cheaper than a wrongly blocked flaky agent.
    """
    summary = observed.summary()
    complaint = f"{observed.stderr_tail}\n{observed.stdout_tail}"
    if observed.exit_code is None:
        return summary, TRANSIENT_INFRA
    if observed.exit_code == 127:
        found = _COMMAND_NOT_FOUND.search(observed.stderr_tail)
        program = found.group(1) if found else observed.program
        return f"{_not_found(program)}; {summary}", STRUCTURAL
    if observed.exit_code == 126:
        return f"agent command not executable: {observed.program}; {summary}", STRUCTURAL
    if _BAD_ARGUMENTS.search(observed.stderr_tail) or (
        observed.exit_code == 2 and _USAGE_LINE.search(complaint)
    ):
        hint = "the agent rejected its command line (check the provider's command)"
        return f"{hint}: {summary}", STRUCTURAL
    if _RATE_LIMITED.search(observed.stderr_tail or observed.stdout_tail):
        return summary, TRANSIENT_INFRA
    guessed = classify_reason(summary)
    return summary, "" if guessed == DETERMINISTIC else guessed


def agent_failure_outcome(observed: AgentExit, status: Outcome | StatusFileError | None) -> Outcome:
    """The final outcome of an agent that did not exit 0: a valid status file decides."""
    if isinstance(status, StatusFileError):
        return _failed(str(status), DETERMINISTIC)
    if status is None:
        return _failed(*classify_agent_failure(observed))
    reason = status.failure_reason
    if not reason and status.status in (StageStatus.FAIL, StageStatus.RETRY):
        reason = f"status file says {status.status.value} without failure_reason; "
        reason += observed.summary()
    notes = status.notes or f"the agent's status file decides; {observed.summary()}"
    return status.evolve(failure_reason=reason, notes=notes)


def final_text(stdout_tail: bytes, *, truncated: bool, full_log: str = "") -> str:
    """The agent's answer from the end of its stdout (when it wrote no ``response.md``).

    A last line that is a JSON ``{"type": "result", "result": "<text>"}`` object (Claude Code's
    JSON output formats) yields that text; anything else is the text itself, with a marker
    in front when earlier output was cut.
    """
    text = decode_tail(stdout_tail).rstrip()
    lines = text.splitlines()
    if lines:
        result = _result_event_text(lines[-1])
        if result is not None:
            return result
    if truncated and text:
        where = f" (full output in {full_log})" if full_log else ""
        return f"[... earlier output truncated{where} ...]\n{text}"
    return text


def _result_event_text(line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if isinstance(event, dict) and event.get("type") == "result":
        result = event.get("result")
        return result if isinstance(result, str) else None
    return None


def _not_found(program: str) -> str:
    return f"agent command not found: {program} (is it installed and on PATH?)"


def _start_failure(program: str, exc: OSError, workdir: Path) -> tuple[str, str]:
    """The agent could not be started: a missing program, a missing workdir, no permission."""
    if exc.filename is not None and Path(exc.filename) == workdir:
        reason = f"agent could not start: working directory {workdir}: {exc.strerror or exc}"
    elif isinstance(exc, FileNotFoundError):
        reason = _not_found(program)
    elif isinstance(exc, PermissionError):
        reason = f"agent command not executable: {program} ({exc.strerror or exc})"
    else:
        reason = f"agent could not start ({program} in {workdir}): {exc}"
    return reason, STRUCTURAL


# --- the stage directory ----------------------------------------------------------------------


@frozen
class _AttemptLog:
    """A log file and the offset where this attempt's output starts (logs are appended to)."""

    path: Path
    start: int

    def tail(self, limit: int) -> tuple[bytes, bool]:
        """This attempt's last ``limit`` bytes, and whether anything before them was cut."""
        size = file_size(self.path)
        offset = max(self.start, size - limit)
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(limit), offset > self.start
        except OSError:
            return b"", False


@frozen
class _AttemptLogs:
    prompt_file: Path
    response_file: Path
    stdout: _AttemptLog
    stderr: _AttemptLog

    def final_text(self) -> str:
        """``response.md`` if the agent wrote a non-blank one, else :func:`final_text`."""
        with contextlib.suppress(OSError):
            written = self.response_file.read_text(encoding="utf-8", errors="replace")
            if written.strip():
                return written
        data, truncated = self.stdout.tail(RESPONSE_LIMIT_BYTES)
        return final_text(data, truncated=truncated, full_log=str(self.stdout.path))

    def observe(
        self, program: str, result: ProcessResult | None, timeout: float | None
    ) -> AgentExit:
        return AgentExit(
            program=program,
            exit_code=None if result is None else result.exit_code,
            stderr_tail=tail_text(self.stderr.tail(_TAIL_BYTES)[0]),
            stdout_tail=tail_text(self.stdout.tail(_TAIL_BYTES)[0]),
            signal_name="" if result is None else result.signal_name,
            timeout_s=timeout,
        )


_TAIL_BYTES = 2 * 1024


def _prepare(attempt: AttemptInfo, prompt: str) -> _AttemptLogs:
    """Stage dir, stale status files and ``response.md`` gone, ``prompt.md`` in place.

    The codergen handler has written ``prompt.md`` and removed stale status files already;
    doing both again keeps the backend correct when something else calls it. Raises
    :class:`StatusFileError` when a stale status file cannot be removed.
    """
    stage_dir = attempt.stage_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_status(attempt)
    prompt_file, response_file = stage_dir / "prompt.md", stage_dir / "response.md"
    response_file.unlink(missing_ok=True)
    write_text_atomic(prompt_file, prompt, durable=False)
    stdout, stderr = stage_dir / "stdout.log", stage_dir / "stderr.log"
    return _AttemptLogs(
        prompt_file,
        response_file,
        _AttemptLog(stdout, file_size(stdout)),
        _AttemptLog(stderr, file_size(stderr)),
    )
