"""Git workspaces (contract.md §10), black-box through the CLI against real temporary repositories.

Every repository here is made with no git identity in the environment (HOME points at an
empty directory), so the tests also prove that the engine commits with its own identity.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, env=_git_env()
    )
    return out.stdout.strip()


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    return env


@pytest.fixture(autouse=True)
def no_git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine must not depend on the machine's git configuration."""
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit (``README``) on ``main``, and an ignored ``build/``."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("hello\n")
    (path / ".gitignore").write_text("build/\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_dot(tmp_path: Path, body: str, name: str = "p.dot") -> Path:
    path = tmp_path / name
    path.write_text("digraph P {\n start [shape=Mdiamond]\n exit [shape=Msquare]\n" + body + "}\n")
    return path


def tool(node: str, command: str, extra: str = "") -> str:
    quoted = command.replace("\\", "\\\\").replace('"', '\\"')
    return f' {node} [shape=parallelogram, tool_command="{quoted}"{extra}]\n'


def run_git(tmp_path: Path, repo: Path, dot: Path, *extra: str) -> tuple[int, Path, str]:
    logs = tmp_path / "logs"
    code, _, err = cli(
        "run", str(dot), "--logs-root", str(logs), "--workdir", str(repo), "--quiet",
        "--workspace", "git", "--run-id", "r1", *extra,
    )  # fmt: skip
    return code, logs, err


def commits(repo: Path, branch: str) -> list[str]:
    """Subjects of ``branch``'s commits since ``main``, oldest first."""
    return git(repo, "log", "--reverse", "--format=%s", f"main..{branch}").splitlines()


def checkpoint(logs: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((logs / "checkpoint.json").read_text())
    return doc


def final(logs: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((logs / "final.json").read_text())
    return doc


# ------------------------------------------------------------------------------ linear runs


def test_linear_run_commits_each_stage_on_the_run_branch_and_leaves_the_user_alone(
    tmp_path: Path, repo: Path
) -> None:
    dot = write_dot(
        tmp_path,
        tool("a", "echo A > a.txt; pwd > build/where 2>/dev/null || true")
        + tool("b", "echo B >> a.txt; echo $ATTRACTOR_WORKDIR > seen.txt")
        + tool("c", "true")
        + " start -> a -> b -> c -> exit\n",
    )
    user_head = git(repo, "rev-parse", "HEAD")
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    branch = "attractor/r1"
    assert commits(repo, branch) == ["a: success", "b: success"]  # c changed nothing
    body = git(repo, "log", "-1", "--format=%B", branch)
    assert "Attractor-Run-Id: r1" in body and "Attractor-Node: b" in body
    assert "Attractor-Attempt: 1" in body
    assert git(repo, "log", "-1", "--format=%an <%ae>", branch) == (
        "attractor-trio <attractor-trio@localhost>"
    )
    assert git(repo, "show", f"{branch}:a.txt") == "A\nB"
    # The stage ran in the run's worktree, not in the user's checkout.
    assert git(repo, "show", f"{branch}:seen.txt") == str((logs / "worktree").resolve())
    assert not (repo / "a.txt").exists()
    assert git(repo, "rev-parse", "HEAD") == user_head
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == ""
    head = git(repo, "rev-parse", branch)
    assert final(logs)["workspace"] == {"branch": branch, "head": head}
    saved = checkpoint(logs)["workspace"]
    assert isinstance(saved, dict) and saved["head"] == head and saved["branch"] == branch
    assert saved["node_commits"]["b"] == head
    assert saved["node_commits"]["c"] == head  # no commit: the head it left
    # Success: the worktree directory is gone, the branch stays.
    assert not (logs / "worktree").exists()
    assert branch in git(repo, "branch", "--list", branch)


def test_keep_worktree_from_the_run_config(tmp_path: Path, repo: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("workspace:\n  kind: git\n  branch_prefix: factory/\n  keep_worktree: true\n")
    dot = write_dot(tmp_path, tool("a", "echo A > a.txt") + " start -> a -> exit\n")
    logs = tmp_path / "logs"
    code, _, err = cli(
        "run", str(dot), "--logs-root", str(logs), "--workdir", str(repo), "--quiet",
        "--config", str(config), "--run-id", "r2",
    )  # fmt: skip
    assert code == 0, err
    assert commits(repo, "factory/r2") == ["a: success"]
    assert (logs / "worktree" / "a.txt").read_text() == "A\n"


def test_a_failing_stage_is_committed_with_its_status_and_the_worktree_stays(
    tmp_path: Path, repo: Path
) -> None:
    dot = write_dot(
        tmp_path,
        tool("a", "echo A > a.txt")
        + tool("b", "echo half > b.txt; exit 3")
        + " start -> a -> b -> exit\n",
    )
    code, logs, _ = run_git(tmp_path, repo, dot)
    assert code == 1
    assert commits(repo, "attractor/r1") == ["a: success", "b: fail"]
    assert (logs / "worktree" / "b.txt").read_text() == "half\n"
    assert final(logs)["workspace"] == {
        "branch": "attractor/r1",
        "head": git(repo, "rev-parse", "attractor/r1"),
    }


def test_every_retry_attempt_gets_its_own_commit(tmp_path: Path, repo: Path) -> None:
    dot = write_dot(
        tmp_path,
        tool("a", "echo x >> log.txt; exit 1", ", max_retries=1, retry_policy=none")
        + " start -> a -> exit\n",
    )
    code, _, _ = run_git(tmp_path, repo, dot)
    assert code == 1
    assert commits(repo, "attractor/r1") == ["a: retry", "a: fail"] or commits(
        repo, "attractor/r1"
    ) == ["a: fail", "a: fail"]
    attempts = git(
        repo, "log", "--format=%(trailers:key=Attractor-Attempt,valueonly)", "main..attractor/r1"
    )
    assert [line for line in attempts.splitlines() if line] == ["2", "1"]


# ------------------------------------------------------------------------------ refusals


def test_a_dirty_tree_is_refused_naming_the_files_and_creating_nothing(
    tmp_path: Path, repo: Path
) -> None:
    (repo / "README").write_text("changed\n")
    (repo / "new.txt").write_text("untracked\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("ignored\n")
    dot = write_dot(tmp_path, tool("a", "true") + " start -> a -> exit\n")
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("attractor-trio: error: git workspace:")
    assert "README" in line and "new.txt" in line and "out.o" not in line
    assert "--allow-dirty" in line
    assert not logs.exists()
    assert "attractor/r1" not in git(repo, "branch", "--list")


def test_allow_dirty_snapshots_the_changes_and_leaves_the_user_files_as_they_were(
    tmp_path: Path, repo: Path
) -> None:
    (repo / "README").write_text("changed\n")
    (repo / "new.txt").write_text("untracked\n")
    git(repo, "add", "README")  # staged, then changed again
    (repo / "README").write_text("changed twice\n")
    before = git(repo, "status", "--porcelain")
    dot = write_dot(tmp_path, tool("a", "cat README new.txt > both.txt") + " start -> a -> exit\n")
    code, _, err = run_git(tmp_path, repo, dot, "--allow-dirty")
    assert code == 0, err
    subjects = commits(repo, "attractor/r1")
    assert subjects[0].startswith("attractor: uncommitted changes") and subjects[1:] == [
        "a: success"
    ]
    assert git(repo, "show", "attractor/r1:both.txt") == "changed twice\nuntracked"
    assert git(repo, "status", "--porcelain") == before
    assert (repo / "README").read_text() == "changed twice\n"
    assert git(repo, "diff", "--cached", "--name-only") == "README"


def test_a_directory_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    dot = write_dot(tmp_path, tool("a", "true") + " start -> a -> exit\n")
    code, logs, err = run_git(tmp_path, plain, dot)
    assert code == 2 and not logs.exists()
    assert err.strip().splitlines()[-1] == (
        f"attractor-trio: error: git workspace: {plain.resolve()} is not inside a git "
        "repository (run `git init` and commit, or name a repository with workspace.repo)"
    )


def test_a_repository_without_commits_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    dot = write_dot(tmp_path, tool("a", "true") + " start -> a -> exit\n")
    code, logs, err = run_git(tmp_path, empty, dot)
    assert code == 2 and not logs.exists()
    assert "has no commits yet" in err.strip().splitlines()[-1]


def test_a_missing_git_is_refused_in_one_line(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    dot = write_dot(tmp_path, tool("a", "true") + " start -> a -> exit\n")
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 2 and not logs.exists()
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith("attractor-trio: error: git workspace: the `git` command")


# ------------------------------------------------------------------------------ parallel


def fan_out(branches: dict[str, str], join_attrs: str = "", after: str = "") -> str:
    """start -> fan -> each branch -> join -> exit (plus ``after``)."""
    body = " fan [shape=component]\n" + f" join [shape=tripleoctagon{join_attrs}]\n"
    for key, command in branches.items():
        body += tool(key, command) + f" fan -> {key}\n {key} -> join\n"
    return body + " start -> fan\n" + (after or " join -> exit\n")


def test_three_parallel_branches_work_in_their_own_worktrees_and_merge_in_edge_order(
    tmp_path: Path, repo: Path
) -> None:
    dot = write_dot(
        tmp_path,
        fan_out(
            {
                "b3": "echo three > three.txt; pwd > where3.txt",
                "b1": "echo one > one.txt; pwd > where1.txt",
                "b2": "echo two > two.txt; test ! -e one.txt",
            }
        ),
    )
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    branch = "attractor/r1"
    merges = git(repo, "log", "--reverse", "--merges", "--format=%s", f"main..{branch}")
    assert merges.splitlines() == [
        f"merge {branch}--b3",
        f"merge {branch}--b1",
        f"merge {branch}--b2",
    ]
    for name, text in (("one.txt", "one"), ("two.txt", "two"), ("three.txt", "three")):
        assert git(repo, "show", f"{branch}:{name}") == text
    expected = (logs / "parallel" / "fan" / "b1" / "worktree").resolve()
    assert git(repo, "show", f"{branch}:where1.txt") == str(expected)
    for key in ("b1", "b2", "b3"):
        assert git(repo, "log", "-1", "--format=%s", f"{branch}--{key}") == f"{key}: success"
        assert not (logs / "parallel" / "fan" / key / "worktree").exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert final(logs)["workspace"] == {"branch": branch, "head": git(repo, "rev-parse", branch)}


def test_a_merge_conflict_fails_the_fan_in_and_routes_to_a_repair_stage(
    tmp_path: Path, repo: Path
) -> None:
    after = (
        ' join -> exit [condition="outcome=success"]\n'
        ' join -> repair [condition="outcome=fail"]\n'
        + tool("repair", "echo repaired > same.txt")
        + " repair -> exit\n"
    )
    dot = write_dot(
        tmp_path,
        fan_out({"b1": "echo one > same.txt", "b2": "echo two > same.txt"}, after=after),
    )
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    status = json.loads((logs / "join" / "status.json").read_text())
    assert status["outcome"] == "fail" and status["failure_class"] == "deterministic"
    assert "same.txt" in status["failure_reason"]
    # The run branch stayed at its pre-fan-in head: no merge, only the repair on top of main.
    branch = "attractor/r1"
    assert commits(repo, branch) == ["repair: success"]
    assert git(repo, "rev-parse", f"{branch}~1") == git(repo, "rev-parse", "main")
    assert git(repo, "show", f"{branch}--b1:same.txt") == "one"  # the refs stay
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_merge_none_keeps_the_branches_apart(tmp_path: Path, repo: Path) -> None:
    dot = write_dot(
        tmp_path, fan_out({"b1": "echo one > one.txt", "b2": "echo two > two.txt"}, ", merge=none")
    )
    code, _, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    assert commits(repo, "attractor/r1") == []
    assert git(repo, "show", "attractor/r1--b2:two.txt") == "two"


# ------------------------------------------------------------------------------ resume

_CRASH_AT_CHECKPOINT = """
import os, signal, sys
import attractor_trio.scopes.run as run_scope
write = run_scope.write_checkpoint_bytes
def crash(root, data):
    if b'"current_node":"%s"' in data:
        os.kill(os.getpid(), signal.SIGKILL)  # after the stage's commit, before its checkpoint
    return write(root, data)
run_scope.write_checkpoint_bytes = crash
from attractor_trio.cli.main import main
sys.argv[0] = "attractor-trio"
main()
"""


_CRASH_AT_MARKER = """
import os, signal, sys
import attractor_trio.scopes.attempt as attempt
write = attempt._Marker.write
def crash(self, stage_dir, **marker):
    if marker["finished"] and self.node_id == "%s":
        os.kill(os.getpid(), signal.SIGKILL)  # after the stage's commit, before its marker
    return write(self, stage_dir, **marker)
attempt._Marker.write = crash
from attractor_trio.cli.main import main
sys.argv[0] = "attractor-trio"
main()
"""


def engine(
    *args: str, crash_at: str = "", before_marker: bool = False
) -> subprocess.CompletedProcess[str]:
    script = _CRASH_AT_MARKER if before_marker else _CRASH_AT_CHECKPOINT
    code = script % crash_at if crash_at else "from attractor_trio.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize("before_marker", [False, True], ids=["before-checkpoint", "before-marker"])
def test_a_crash_between_commit_and_checkpoint_then_resume_adopts_that_commit(
    tmp_path: Path, repo: Path, before_marker: bool
) -> None:
    """Killed after b's git commit and before its checkpoint — also before its finished
    marker (the tool stage is then adopted as an orphan that ended)."""
    ledger = tmp_path / "ledger"
    dot = write_dot(
        tmp_path,
        tool("a", f"echo a > a.txt; echo a >> {ledger}")
        + tool("b", f"echo b$(wc -l < {ledger}) > b.txt; echo b >> {ledger}")
        + tool("c", "echo c > c.txt")
        + " start -> a -> b -> c -> exit\n",
    )
    logs = tmp_path / "logs"
    common = ("--workdir", str(repo), "--quiet", "--stall-timeout", "0")
    first = engine(
        "run", str(dot), "--logs-root", str(logs), "--workspace", "git", "--run-id", "r1",
        *common, crash_at="b", before_marker=before_marker,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stderr
    branch = "attractor/r1"
    assert commits(repo, branch) == ["a: success", "b: success"]  # committed, not checkpointed
    saved = checkpoint(logs)["workspace"]
    assert isinstance(saved, dict) and saved["head"] == git(repo, "rev-parse", f"{branch}~1")
    b_commit = git(repo, "rev-parse", branch)
    second = engine("resume", str(logs), *common)
    assert second.returncode == 0, second.stderr
    # b finished before the crash: resume adopts it (exactly once) and takes its very commit.
    assert ledger.read_text().split() == ["a", "b"]
    assert commits(repo, branch) == ["a: success", "b: success", "c: success"]
    assert git(repo, "rev-parse", f"{branch}~1") == b_commit
    assert git(repo, "show", f"{branch}:b.txt") == "b1"
    head = git(repo, "rev-parse", branch)
    assert final(logs)["workspace"] == {"branch": branch, "head": head}
    assert checkpoint(logs)["workspace"]["head"] == head  # type: ignore[index]
    assert not list(logs.glob("*/attempt-*/changes.patch"))  # nothing was discarded


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_saves_the_half_done_changes_as_a_patch(
    tmp_path: Path, repo: Path
) -> None:
    go, mark = tmp_path / "go", tmp_path / "started"
    command = (
        f"if [ -e {go} ]; then echo done > done.txt; "
        f"else echo partial > wip.txt; echo $$ > {mark}; sleep 30; fi"
    )
    dot = write_dot(
        tmp_path, tool("a", "echo a > a.txt") + tool("b", command) + " start -> a -> b -> exit\n"
    )
    logs = tmp_path / "logs"
    common = ["--workdir", str(repo), "--quiet", "--stall-timeout", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "run", str(dot), "--logs-root", str(logs),
         "--workspace", "git", "--run-id", "r1", *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (mark.exists() and mark.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    os.killpg(os.getpgid(int(mark.read_text())), signal.SIGKILL)  # the orphaned stage too
    assert (logs / "worktree" / "wip.txt").exists() and not (logs / "final.json").exists()
    go.touch()
    resumed = engine("resume", str(logs), *common)
    assert resumed.returncode == 0, resumed.stderr
    assert commits(repo, "attractor/r1") == ["a: success", "b: success"]
    assert git(repo, "ls-tree", "--name-only", "attractor/r1").split() == [
        ".gitignore", "README", "a.txt", "done.txt"
    ]  # fmt: skip
    patches = list(logs.glob("b/attempt-*/changes.patch"))
    assert len(patches) == 1 and "+partial" in patches[0].read_text()


# ------------------------------------------------------------------------------ mechanics


async def test_git_runs_in_its_own_process_group_and_is_cancelled_like_a_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio

    from attractor_trio.aio.process import live_group_members
    from attractor_trio.workspace.git import git as run_git_cli

    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    pids = tmp_path / "pids"
    fake.write_text(f"#!/bin/sh\necho $$ $(ps -o pgid= -p $$) > {pids}\nsleep 30 & wait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    started = time.monotonic()
    with trio.move_on_after(0.5):
        await run_git_cli(["status"], cwd=tmp_path, kill_grace=0.1)
    assert time.monotonic() - started < 3
    pid, pgid = (int(x) for x in pids.read_text().split())
    assert pid == pgid != os.getpgid(0)  # the leader of its own group
    assert live_group_members(pgid) == []  # git and what it started (the sleep) are gone


def test_the_run_config_workspace_section_is_checked(tmp_path: Path) -> None:
    from attractor_trio.errors import ConfigError
    from attractor_trio.runconfig import parse_run_config

    config = parse_run_config({"workspace": {"repo": "/r", "keep_worktree": True}})
    assert config.workspace is not None and config.workspace.kind == "git"
    with pytest.raises(ConfigError, match=r"workspace.kind: must be git"):
        parse_run_config({"workspace": {"kind": "svn"}})
    with pytest.raises(ConfigError, match="keep_worktree"):
        parse_run_config({"workspace": {"keep_worktree": "yes"}})


def test_allow_dirty_without_a_workspace_is_a_usage_error(tmp_path: Path) -> None:
    dot = write_dot(tmp_path, tool("a", "true") + " start -> a -> exit\n")
    code, _, err = cli("run", str(dot), "--logs-root", str(tmp_path / "l"), "--allow-dirty")
    assert code == 2 and "--allow-dirty needs a git workspace" in err
    assert not (tmp_path / "l").exists()


def test_stages_run_in_the_workdirs_subdirectory_of_the_worktree(
    tmp_path: Path, repo: Path
) -> None:
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pkg")
    dot = write_dot(tmp_path, tool("a", "ls > listing.txt") + " start -> a -> exit\n")
    code, _, err = run_git(tmp_path, repo / "pkg", dot)
    assert code == 0, err
    assert git(repo, "show", "attractor/r1:pkg/listing.txt").split() == ["listing.txt", "mod.py"]


def test_a_custom_outcome_is_the_commit_status(tmp_path: Path, repo: Path) -> None:
    command = 'echo x > x.txt; printf \'{"outcome": "needs_dod"}\' > "$ATTRACTOR_STATUS_PATH"'
    dot = write_dot(tmp_path, tool("a", command) + " start -> a -> exit\n")
    code, _, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    assert commits(repo, "attractor/r1") == ["a: needs_dod"]


async def test_the_python_api_takes_a_workspace_config(tmp_path: Path, repo: Path) -> None:
    import attractor_trio

    graph = attractor_trio.load(
        write_dot(tmp_path, tool("a", "echo a > a.txt") + " start -> a -> exit\n")
    )
    result = await attractor_trio.run(
        graph,
        logs_root=tmp_path / "logs",
        run_id="api",
        workdir=repo,
        workspace=attractor_trio.WorkspaceConfig(branch_prefix="api/", keep_worktree=True),
    )
    assert result.status == "success"
    assert commits(repo, "api/api") == ["a: success"]
    assert (tmp_path / "logs" / "worktree" / "a.txt").exists()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_keeps_branch_checkpoint_and_files_agreeing(
    tmp_path: Path, repo: Path
) -> None:
    """The recovery crash test with a git workspace: whenever the engine dies, after resume
    the run branch holds exactly one commit per stage, in order, and final.json names its head."""
    stages = [f"t{i:02d}" for i in range(12)]
    dot = write_dot(
        tmp_path,
        "".join(tool(n, f"echo {n} > {n}.txt; sleep 0.3") for n in stages)
        + " start -> " + " -> ".join(stages) + " -> exit\n",
    )  # fmt: skip
    logs = tmp_path / "logs"
    _kill_at_random_then_finish(repo, dot, logs, seed=21, kills=8, earliest=0.3)
    assert final(logs)["status"] == "success"
    branch = "attractor/r1"
    assert commits(repo, branch) == [f"{n}: success" for n in stages]
    assert final(logs)["workspace"] == {"branch": branch, "head": git(repo, "rev-parse", branch)}
    listed = git(repo, "ls-tree", "--name-only", branch).split()
    assert listed == sorted([".gitignore", "README", *(f"{n}.txt" for n in stages)])
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout never changed


def test_runs_inside_the_repository_do_not_make_the_next_run_dirty(
    tmp_path: Path, repo: Path
) -> None:
    """The default logs root ``./runs/<id>`` lies inside the repository when run from there."""
    dot = write_dot(tmp_path, tool("a", "echo a > a.txt; exit 1") + " start -> a -> exit\n")
    for run_id in ("first", "second"):
        code, _, err = cli(
            "run", str(dot), "--logs-root", str(repo / "runs" / run_id), "--workdir", str(repo),
            "--quiet", "--workspace", "git", "--run-id", run_id,
        )  # fmt: skip
        assert code == 1, err  # the stage fails; the run is not refused as dirty
    assert commits(repo, "attractor/second") == ["a: fail"]


@pytest.mark.slow
def test_an_orphaned_stage_adopted_on_resume_commits_its_own_work(
    tmp_path: Path, repo: Path
) -> None:
    """The engine dies while a tool stage runs; the stage finishes on its own. Resume adopts
    it (exactly once) and its files become its commit — not a discarded patch."""
    mark, ledger = tmp_path / "started", tmp_path / "ledger"
    command = f"echo b >> {ledger}; echo one > one.txt; touch {mark}; sleep 1; echo two > two.txt"
    dot = write_dot(
        tmp_path, tool("a", "echo a > a.txt") + tool("b", command) + " start -> a -> b -> exit\n"
    )
    logs = tmp_path / "logs"
    common = ["--workdir", str(repo), "--quiet", "--stall-timeout", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "run", str(dot), "--logs-root", str(logs),
         "--workspace", "git", "--run-id", "r1", *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    resumed = engine("resume", str(logs), *common)
    assert resumed.returncode == 0, resumed.stderr
    assert ledger.read_text().split() == ["b"]  # adopted, not run again
    assert commits(repo, "attractor/r1") == ["a: success", "b: success"]
    assert git(repo, "show", "attractor/r1:two.txt") == "two"
    assert not list(logs.glob("b/attempt-*/changes.patch"))


@pytest.mark.slow
def test_ctrl_c_then_resume_discards_the_canceled_attempts_changes_into_a_patch(
    tmp_path: Path, repo: Path
) -> None:
    go, mark = tmp_path / "go", tmp_path / "started"
    command = (
        f"if [ -e {go} ]; then echo done > done.txt; "
        f"else echo partial > wip.txt; echo $$ > {mark}; sleep 30; fi"
    )
    dot = write_dot(
        tmp_path, tool("a", "echo a > a.txt") + tool("b", command) + " start -> a -> b -> exit\n"
    )
    logs = tmp_path / "logs"
    common = ["--workdir", str(repo), "--quiet", "--stall-timeout", "0", "--kill-grace", "1s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "run", str(dot), "--logs-root", str(logs),
         "--workspace", "git", "--run-id", "r1", *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (mark.exists() and mark.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    canceled = final(logs)
    assert canceled["status"] == "canceled"
    head = git(repo, "rev-parse", "attractor/r1")
    assert canceled["workspace"] == {"branch": "attractor/r1", "head": head}
    assert commits(repo, "attractor/r1") == ["a: success"]  # the canceled attempt: no commit
    assert (logs / "worktree" / "wip.txt").exists()  # kept for inspection
    go.touch()
    resumed = engine("resume", str(logs), *common)
    assert resumed.returncode == 0, resumed.stderr
    assert commits(repo, "attractor/r1") == ["a: success", "b: success"]
    assert "wip.txt" not in git(repo, "ls-tree", "--name-only", "attractor/r1").split()
    patches = list(logs.glob("b/attempt-*/changes.patch"))
    assert len(patches) == 1 and "+partial" in patches[0].read_text()
    assert json.loads((logs / "final-1.json").read_text())["status"] == "canceled"


@pytest.mark.slow
def test_resume_from_moves_the_run_branch_back_and_keeps_the_old_tip(
    tmp_path: Path, repo: Path
) -> None:
    dot = write_dot(
        tmp_path,
        tool("a", "echo a > a.txt")
        + tool("b", "echo b >> b.txt")
        + tool("c", "echo c >> c.txt")
        + " start -> a -> b -> c -> exit\n",
    )
    code, logs, err = run_git(tmp_path, repo, dot)
    assert code == 0, err
    branch = "attractor/r1"
    first_tip = git(repo, "rev-parse", branch)
    a_commit = git(repo, "rev-parse", f"{branch}~2")
    common = ["--workdir", str(repo), "--quiet", "--stall-timeout", "0"]
    again = engine("resume", str(logs), "--from", "b", *common)
    assert again.returncode == 0, again.stderr
    assert git(repo, "rev-parse", f"{branch}--before-from-1") == first_tip
    assert git(repo, "rev-parse", f"{branch}~2") == a_commit  # b and c redone on top of a
    assert commits(repo, branch) == ["a: success", "b: success", "c: success"]
    assert git(repo, "show", f"{branch}:b.txt") == "b"  # not "b\nb": b started from a's tree
    third = engine("resume", str(logs), "--from", "c", *common)
    assert third.returncode == 0, third.stderr
    assert git(repo, "rev-parse", f"{branch}--before-from-2") != first_tip
    assert final(logs)["workspace"] == {"branch": branch, "head": git(repo, "rev-parse", branch)}
    assert not (logs / "worktree").exists()  # success again: removed


async def test_a_nested_fan_outs_branches_append_their_key_again(
    tmp_path: Path, repo: Path
) -> None:
    """Unit level: the engine's fan-in detection stops a branch at the first fan-in it meets,
    so a pipeline cannot nest fan-outs inside one branch today; the naming is ready for it."""
    from attractor_trio.workspace import Workspace

    head = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "attractor/r", head)
    run = Workspace(repo=repo, run_id="r", branch="attractor/r", worktree=repo, head=head)
    child = await run.branch_workspace("x", tmp_path / "p" / "x" / "worktree")
    grandchild = await child.branch_workspace("x1", tmp_path / "p" / "x" / "q" / "x1" / "worktree")
    assert (child.branch, grandchild.branch) == ("attractor/r--x", "attractor/r--x--x1")
    (grandchild.worktree / "deep.txt").write_text("deep\n")
    await grandchild.commit_attempt("x1", 1, "success")
    assert await child.join_branches(["x1"], ["x1"], merge=True) is None
    assert git(repo, "show", "attractor/r--x:deep.txt") == "deep"
    assert not grandchild.worktree.exists() and child.worktree.exists()


@pytest.mark.slow
def test_sigkill_during_a_fan_out_then_resume_merges_every_branch_once(
    tmp_path: Path, repo: Path
) -> None:
    ledger = tmp_path / "ledger"
    branches = {
        f"b{i}": f"echo b{i} >> {ledger}; echo b{i} > b{i}.txt; sleep 0.4" for i in range(3)
    }
    dot = write_dot(tmp_path, fan_out(branches, after=" join -> exit\n").replace(
        "fan [shape=component]", "fan [shape=component, max_parallel=2]"))  # fmt: skip
    logs = tmp_path / "logs"
    _kill_at_random_then_finish(repo, dot, logs, seed=7, kills=4, earliest=0.4)
    assert final(logs)["status"] == "success"
    assert sorted(ledger.read_text().split()) == ["b0", "b1", "b2"]  # each branch ran once
    branch = "attractor/r1"
    merges = git(repo, "log", "--merges", "--format=%s", f"main..{branch}").splitlines()
    assert sorted(merges) == [f"merge {branch}--b{i}" for i in range(3)]
    for i in range(3):
        assert git(repo, "show", f"{branch}:b{i}.txt") == f"b{i}"
        assert commits(repo, f"{branch}--b{i}") == [f"b{i}: success"]
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def _kill_at_random_then_finish(
    repo: Path, dot: Path, logs: Path, *, seed: int, kills: int, earliest: float
) -> None:
    """Start the run with ``--workspace git``, SIGKILL it (and then its resumes) after a random
    ``earliest`` to 0.9 s up to ``kills`` times, then resume until ``final.json`` exists."""
    import random

    common = ["--workdir", str(repo), "--quiet", "--stall-timeout", "0"]
    first_run = ["run", str(dot), "--logs-root", str(logs), "--workspace", "git", "--run-id", "r1"]
    rng = random.Random(seed)
    killed, first = 0, True
    while killed < kills and not (logs / "final.json").exists():
        argv = first_run if first else ["resume", str(logs)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "attractor_trio", *argv, *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(earliest, 0.9))
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait(timeout=30)
        first = first and not (logs / "manifest.json").exists()
    for _ in range(5):
        if (logs / "final.json").exists():
            break
        done = engine(*(first_run if first else ["resume", str(logs)]), *common)
        assert done.returncode == 0, done.stderr
        first = False
