"""``loopwise run --tools``: built-in toolkits from the command line, approval on the terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from loopwise import ApprovalRequest, Approve, Reject, UsageError
from loopwise.cli.toolsets import TerminalApprover, ToolSpec, parse_tool_specs

AGENTS = """
from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call

writer = Agent(
    ScriptedModel(
        [
            call("write_file", path="notes.txt", content="one"),
            call("write_file", path="notes.txt", content="two"),
            call("write_file", path="notes.txt", content="three"),
            "Written.",
        ]
    )
)
coder = Agent(ScriptedModel([call("run_python", code="print(6 * 7)"), "Done."]))
"""


def run_cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env["PYTHONPATH"] = str(cwd)
    env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "loopwise", "run", "write notes", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cli_tool_agents.py").write_text(AGENTS)
    (tmp_path / "ws").mkdir()
    return tmp_path


def test_parse_tool_specs() -> None:
    assert parse_tool_specs(["files,http", "git=/repo", " system "]) == [
        ToolSpec("files"),
        ToolSpec("http"),
        ToolSpec("git", "/repo"),
        ToolSpec("system"),
    ]
    with pytest.raises(UsageError, match="unknown toolkit 'nope'"):
        parse_tool_specs(["files,nope"])
    with pytest.raises(UsageError, match="scripts=DIR"):
        parse_tool_specs(["scripts"])


def test_terminal_approver_answers() -> None:
    request = ApprovalRequest("run", "c1", "write_file", {"path": "a"})
    out = io.StringIO()
    approver = TerminalApprover("ask", stdin=io.StringIO("maybe\ny\na\nn\n"), stderr=out)

    async def ask() -> list[object]:
        return [await approver(request), await approver(request), await approver(request)]

    first, second, third = anyio.run(ask)
    assert first == Approve()  # "maybe" is asked again, then "y"
    assert second == Approve() and approver.always == {"write_file"}
    assert third == Approve()  # always: not asked again
    assert out.getvalue().count("approval needed: write_file") == 3
    eof = TerminalApprover("ask", stdin=io.StringIO(""), stderr=io.StringIO())
    assert isinstance(anyio.run(eof, request), Reject)
    assert isinstance(anyio.run(TerminalApprover("no"), request), Reject)
    assert anyio.run(TerminalApprover("yes"), request) == Approve()


def test_overwrite_asks_on_the_terminal(project: Path) -> None:
    ws = project / "ws"
    done = run_cli(
        project,
        "--agent=cli_tool_agents:writer",
        "--tools=files",
        f"--workspace={ws}",
        "--approve=ask",
        stdin="y\nn\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("approval needed: write_file") == 2  # creating was not asked
    # The first overwrite was approved, the second denied.
    assert (ws / "notes.txt").read_text() == "two"
    assert "rejected by the user: denied on the terminal" in done.stderr


def test_without_a_terminal_the_run_waits_for_input(project: Path) -> None:
    ws = project / "ws"
    done = run_cli(project, "--agent=cli_tool_agents:writer", "--tools=files", f"--workspace={ws}")
    assert done.returncode == 4, done.stderr
    assert "input required: approval is needed for" in done.stderr
    assert (ws / "notes.txt").read_text() == "one"


def test_default_workspace_is_new_and_printed(project: Path) -> None:
    done = run_cli(project, "--agent=cli_tool_agents:writer", "--tools=files", "--approve=yes")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("workspace: "))
    workspace = Path(line.removeprefix("workspace: "))
    assert workspace.parent == project / "data" / "workspaces"
    assert (workspace / "notes.txt").read_text() == "three"


def test_bad_toolkit_exits_2(project: Path) -> None:
    done = run_cli(project, "--agent=cli_tool_agents:writer", "--tools=files,nope")
    assert done.returncode == 2
    assert "unknown toolkit 'nope'" in done.stderr


def test_python_tool_runs_in_the_sandbox(project: Path) -> None:
    from loopwise.sandbox import SandboxUnavailable, default_sandbox

    try:
        default_sandbox()
    except SandboxUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no sandbox here: {exc}")
    ws = project / "ws"
    coder = "--agent=cli_tool_agents:coder"
    waiting = run_cli(project, coder, "--tools=python", f"--workspace={ws}")
    assert waiting.returncode == 4, waiting.stderr  # code runs only after a decision
    assert "approval is needed for" in waiting.stderr and "(run_python)" in waiting.stderr
    done = run_cli(project, coder, "--tools=python", f"--workspace={ws}", "--approve=yes")
    assert done.returncode == 0, done.stderr
    assert "42" in done.stderr
