"""``attractor-trio fuzz``: options, the report for humans and for ``--json``, exit codes.

The report is the command's output, so it goes to stdout (``--json``: one JSON object and
nothing else); progress notes and diagnostics go to stderr. Every finding carries its minimal
schedule twice: as :meth:`~attractor_trio.testing.Schedule.describe` text, and as a
``--sim-script`` document the author can save and replay with ``attractor-trio run PIPELINE
--simulate --sim-script repro.yaml``.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from typing import TYPE_CHECKING, Any, Final

import click
import yaml

from ..core.exit_codes import EXIT_CLEAN, EXIT_FOUND
from ..errors import ConfigError
from .run import _guard, max_input_size_option

if TYPE_CHECKING:
    from ..dot.graph import Graph
    from ..testing import Schedule, Step
    from ..testing.fuzz import Finding, FuzzReport

__all__ = ["fuzz_command", "register", "render_report", "sim_script_for"]


#: What each kind means for the author, and how to fix it.
ADVICE: Final = {
    "non_termination": (
        "Under this schedule the run never ends: a loop keeps going because nothing stops "
        "it (failures of a class the cycle breaker ignores — transient_infra, "
        "budget_exhausted, canceled —, outcomes that are not failures at all, such as "
        "partial_success or a steering stage's custom outcome, or a breaker switched off "
        "with loop_restart_signature_limit=0), or "
        "a stage never finishes. Bound the loop: set the graph attribute max_node_visits, "
        "keep the cycle breaker on (loop_restart_signature_limit >= 1), or give the loop a "
        "way out (a condition edge to a give-up stage); give slow stages a timeout."
    ),
    "lost_failure_reason": (
        "The run failed, but final.json's failure_reason is empty or is not the raw reason "
        "of the failure that caused it, so nobody reading it can tell what broke. A custom "
        "handler must put the cause in failure_reason; otherwise this is an engine bug — "
        "please report it with the schedule below."
    ),
    "failure_routed_to_success": (
        "The run ended in success although a stage failed: the detail says how the failure "
        "reached the exit. If the stage is optional and that route is deliberate (say, a "
        'condition="outcome=fail" edge straight to the exit), this is expected. Otherwise '
        "route the failure to a recovery stage (a condition edge or a retry_target), or set "
        "goal_gate=true on the stage that must succeed."
    ),
    "unreachable_goal_gate": (
        "A goal gate guards the exit only when the run passes through it: this run reached "
        "the exit without visiting the gate, so the gate never ran. Put the gate on every "
        "path to the exit, or move goal_gate=true to a stage that every path visits."
    ),
    "visit_bound": (
        "A stage ran more often in one run than the visit bound allows before the run ended: "
        "a loop iterates far longer than intended. Cap it with max_node_visits, or retry "
        "inside the stage (max_retries) instead of looping through the graph."
    ),
}


@click.command("fuzz")
@click.argument(
    "pipeline_path", metavar="PIPELINE.dot", type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--examples",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Random schedules to try per kind of finding.",
)
@click.option("--seed", type=int, help="Seed for the search; the same seed gives the same report.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@max_input_size_option
@_guard
def fuzz_command(
    pipeline_path: str, examples: int, seed: int | None, as_json: bool, max_input_size: int
) -> None:
    """Run PIPELINE.dot under generated fault and cancel schedules with fake backends.

    Reports non_termination, lost_failure_reason, failure_routed_to_success,
    unreachable_goal_gate and visit_bound, each with a minimal reproducing schedule.
    Exit 0 when nothing is found, 1 with findings, 2 on usage, parse or validation errors.
    """
    from ..dot.pipeline import prepare_pipeline

    fuzz = _load_fuzz()
    graph, diagnostics = prepare_pipeline(pipeline_path, max_size=max_input_size)
    for diagnostic in diagnostics:
        click.echo(diagnostic.format(pipeline_path), err=True)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    click.echo(f"fuzzing {pipeline_path}: {examples} examples per kind, seed {seed}", err=True)
    report = fuzz(graph, examples=examples, seed=seed, file=pipeline_path)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_report(report, graph))
    sys.exit(EXIT_CLEAN if report.clean else EXIT_FOUND)


def _load_fuzz() -> Any:
    """Hypothesis drives the search; it ships with the ``fuzz`` extra (which the README's
    install command includes), not with the core install."""
    try:
        from ..testing.fuzz import fuzz
    except ImportError as exc:
        raise ConfigError(
            f"attractor-trio fuzz needs Hypothesis ({exc}); install it with "
            "`pip install 'attractor-trio[fuzz]'`"
        ) from None
    return fuzz


# ---------------------------------------------------------------------------------- report


def render_report(report: FuzzReport, graph: Graph) -> str:
    """The human report: a summary line, then each finding with advice and reproducers."""
    count = len(report.findings)
    summary = (
        f"{report.file}: {count} finding{'s' if count != 1 else ''} "
        f"({report.runs} schedules run, {report.examples} examples per kind, seed "
        f"{report.seed})"
    )
    if report.clean:
        return f"{summary}: clean"
    parts = [summary]
    advised: dict[str, int] = {}
    for number, finding in enumerate(report.findings, start=1):
        first = advised.setdefault(finding.kind, number)
        advice = ADVICE[finding.kind] if first == number else f"How to fix it: see [{first}]."
        parts.append(_render_finding(number, finding, advice, report.file, graph))
    return "\n\n".join(parts)


def _render_finding(number: int, finding: Finding, advice: str, file: str, graph: Graph) -> str:
    where = f" at node '{finding.node_id}'" if finding.node_id else ""
    script, notes = sim_script_for(graph, finding.schedule)
    until = " (it runs until you press Ctrl-C)" if finding.kind == "non_termination" else ""
    lines = [
        f"[{number}] {finding.kind}{where}",
        _wrap(f"{finding.detail}."),
        _wrap(advice),
        "  Minimal reproducing " + finding.schedule.describe().replace("\n", "\n  "),
        f"  Replay it{until}: save the YAML below as repro.yaml, then run\n"
        f"    attractor-trio run {file} --simulate --sim-script repro.yaml",
    ]
    yaml_lines = [f"# {note}" for note in notes]
    yaml_lines.extend(yaml.safe_dump(script, sort_keys=False).rstrip().splitlines())
    lines.extend(f"    {line}" for line in yaml_lines)
    return "\n".join(lines)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=96, initial_indent="  ", subsequent_indent="  ")


def sim_script_for(graph: Graph, schedule: Schedule) -> tuple[dict[str, Any], list[str]]:
    """The schedule as a ``--sim-script`` document (contract.md §6), plus notes on what a sim
    script cannot express: tool stages (they run real commands), the cancel point."""
    nodes: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    for node_id, steps in schedule.steps.items():
        node = graph.nodes.get(node_id)
        if node is not None and node.handler_type != "codergen":
            notes.append(
                f"'{node_id}' is a {node.handler_type} stage, which a sim script cannot "
                f"script; make it do: {'; '.join(step.describe() for step in steps)}"
            )
            continue
        timeout = node.timeout if node is not None else None
        nodes[node_id] = [
            _sim_step(step, node_id, index, timeout) for index, step in enumerate(steps)
        ]
        if any(step.kind == "raise" for step in steps):
            notes.append(f"'{node_id}': the fuzz raised an exception here; scripted as a fail")
    if schedule.cancel_at is not None:
        notes.append(f"then cancel the run (Ctrl-C) {schedule.cancel_at:g}s after it starts")
    if schedule.cancel_after_event is not None:
        notes.append(f"then cancel the run (Ctrl-C) after event seq {schedule.cancel_after_event}")
    return {"nodes": nodes}, notes


def _sim_step(step: Step, node_id: str, index: int, timeout: float | None) -> dict[str, Any]:
    """One sim-script step doing what the schedule's step does for call ``index``."""
    from ..testing.harness import default_reason

    doc: dict[str, Any] = {}
    if step.delay:
        doc["delay"] = f"{step.delay:g}s"
    kind = step.kind
    if kind in ("success", "partial"):
        doc["outcome"] = step.outcome or ("success" if kind == "success" else "partial_success")
    elif kind in ("fail", "retry", "raise"):
        doc["outcome"] = "retry" if kind == "retry" else "fail"
        doc["failure_reason"] = default_reason(step, node_id, index)
        if step.failure_class:
            doc["failure_class"] = step.failure_class
    elif kind == "timeout" and timeout is not None:
        doc["delay"] = f"{step.delay + timeout + 1:g}s"  # keeps working past the node timeout
    else:
        doc["stall"] = "forever"
    return doc


def register(group: click.Group) -> None:
    group.add_command(fuzz_command)
