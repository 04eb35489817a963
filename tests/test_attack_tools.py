"""Attacks on the built-in tools: approval gates, secrets in what tools show, deep or huge
trees, and regular expressions that backtrack (classes 17, 18, 20 and 21)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, Approve, ModelRetry, Reject, Tool, ToolContext
from loopwise.cli.toolsets import build_tools, parse_tool_specs
from loopwise.models.testing import ScriptedModel, call
from loopwise.sandbox import Limits, SandboxResult
from loopwise.toolkits.code import python, shell
from loopwise.toolkits.files import files


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def direct(t: Tool, *, approved: bool = False, **args: Any) -> Any:
    """Call a tool's function as the loop would, with or without a human approval."""
    kwargs = t.validate(args)
    if t.context_param:
        kwargs[t.context_param] = ToolContext("run", "call", t.name, 1, None, approved=approved)
    result = t.function(**kwargs)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


# --- class 17: approval gates ------------------------------------------------------------

CHANGES = [  # (tool, args): each changes or deletes the existing app.py
    ("append_file", {"path": "app.py", "content": "evil()\n"}),
    ("append_file", {"path": "./app.py", "content": "evil()\n"}),
    ("append_file", {"path": "src/../app.py", "content": "evil()\n"}),
    ("append_file", {"path": "link_to_app", "content": "evil()\n"}),
    ("append_file", {"path": "{ws}/app.py", "content": "evil()\n"}),
    ("append_file", {"path": "app.py", "content": ""}),
    ("write_file", {"path": "app.py", "content": "gone"}),
    ("delete_file", {"path": "app.py"}),
    ("run_shell", {"command": "rm app.py"}),
    ("run_shell", {"command": "echo evil >> app.py"}),
    ("run_shell", {"command": ": > app.py"}),
    ("run_python", {"code": "import os; os.remove('app.py')"}),
    ("run_python", {"code": "open('app.py', 'a').write('evil()')"}),
]
AGENT = """
from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call

CHANGES = {changes!r}
changer = Agent(ScriptedModel([[call(name, **args) for name, args in CHANGES], "Done."]))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "app.py").write_text("print('app')\n")
    (ws / "link_to_app").symlink_to("app.py")
    changes = [(n, {k: v.format(ws=ws) for k, v in a.items()}) for n, a in CHANGES]
    (tmp_path / "attack_agents.py").write_text(AGENT.format(changes=changes))
    return tmp_path


def run_cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env["PYTHONPATH"] = str(cwd)
    env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "loopwise", "run", "change app.py", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_change_asks_on_the_terminal_and_a_denial_changes_nothing(project: Path) -> None:
    ws = project / "ws"
    tools = "--tools=files,shell,python"
    asked = run_cli(
        project,
        "--agent=attack_agents:changer",
        tools,
        f"--workspace={ws}",
        "--approve=ask",
        stdin="n\n" * len(CHANGES),
    )
    assert asked.returncode == 0, asked.stderr
    prompts = asked.stderr.count("approval needed: ")
    for name in {n for n, _ in CHANGES}:
        expected = sum(1 for n, _ in CHANGES if n == name)
        assert asked.stderr.count(f"approval needed: {name} ") == expected, name
    assert (ws / "app.py").read_text() == "print('app')\n"
    # Without a terminal and without --approve, the run stops for input and changes nothing.
    waiting = run_cli(project, "--agent=attack_agents:changer", tools, f"--workspace={ws}")
    assert waiting.returncode == 4, waiting.stderr
    assert waiting.stderr.count("(append_file)") == 6 and "(run_shell)" in waiting.stderr
    assert (ws / "app.py").read_text() == "print('app')\n"
    figure(
        f"approval gates (CLI): {len(CHANGES)} changes to an existing file through "
        f"append/write/delete/shell/python, asked: {prompts}, ran without a decision: 0"
    )


def test_every_cli_tool_that_changes_something_asks(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.sh").write_text("#!/bin/sh\necho hi\n")
    (scripts / "hello.sh").chmod(0o755)
    (tmp_path / "old.txt").write_text("old")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    specs = parse_tool_specs(["files,http,git,python,shell,system,documents,browser"])
    specs += parse_tool_specs([f"scripts={scripts}"])
    tools = by_name(build_tools(specs, workspace=tmp_path))
    changing = {
        "write_file": {"path": "old.txt", "content": "x"},
        "append_file": {"path": "old.txt", "content": "x"},
        "delete_file": {"path": "old.txt"},
        "run_python": {"code": "pass"},
        "run_shell": {"command": "true"},
    }
    for name, args in changing.items():
        assert tools[name].needs_approval(args), name
    read_only = {
        "read_file", "list_dir", "find_files", "grep", "http_get", "git_log", "git_status",
        "git_diff", "git_show", "git_blame", "git_shortlog", "git_grep", "list_logs",
        "tail_log", "grep_log", "memory", "disk_usage", "load", "processes", "read_image",
        "read_pdf", "screenshot",
        "run_script",  # runs only the scripts the user listed with --tools scripts=DIR
    }  # fmt: skip
    assert set(tools) == read_only | set(changing), "classify each new tool here"
    figure(f"approval gates: {len(changing)} CLI tools change or delete, all ask by default")


def test_append_to_an_existing_file_pauses_and_a_new_file_does_not(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('app')\n")
    model = ScriptedModel(
        [
            [
                call("append_file", path="new.txt", content="n"),
                call("append_file", path="app.py", content="evil()\n"),
            ],
            "Done.",
        ]
    )
    agent = Agent(model, tools=files(tmp_path))
    paused = agent.run_sync("append")
    assert paused.status == "input_required"
    [pending] = paused.pending_approvals
    assert (pending.tool_name, pending.args["path"]) == ("append_file", "app.py")
    assert (tmp_path / "new.txt").read_text() == "n"
    assert (tmp_path / "app.py").read_text() == "print('app')\n"
    rejected = asyncio.run(agent.resume(paused, {pending.call_id: Reject("no")}))
    assert rejected.status == "completed" and (tmp_path / "app.py").read_text() == "print('app')\n"
    agent = Agent(ScriptedModel([call("append_file", path="app.py", content="ok\n"), "Done."]))
    agent.tools = by_name(files(tmp_path))
    paused = agent.run_sync("append")
    done = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Approve()}))
    assert done.status == "completed" and (tmp_path / "app.py").read_text() == "print('app')\nok\n"


def test_unapproved_append_never_adds_to_a_file_that_appeared_after_the_check(
    tmp_path: Path,
) -> None:
    tools = by_name(files(tmp_path))
    append = tools["append_file"]
    assert not append.needs_approval({"path": "late.txt"})  # absent at the decision...
    (tmp_path / "late.txt").write_text("mine\n")  # ...present when the call runs
    with pytest.raises(ModelRetry, match="already exists and adding to it needs approval"):
        direct(append, path="late.txt", content="evil\n")
    assert (tmp_path / "late.txt").read_text() == "mine\n"
    assert direct(append, approved=True, path="late.txt", content="ok\n").startswith("Appended")
    assert not by_name(files(tmp_path, approve_overwrite=False))["append_file"].requires_approval


class FakeSandbox:
    """Counts the commands that would have run."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(self, argv: Any, **_: Any) -> SandboxResult:
        self.calls.append(list(argv))
        return SandboxResult(0, "ran\n", "", 0.01)


def test_code_tools_take_an_approval_rule(tmp_path: Path) -> None:
    fake = FakeSandbox()
    limits = Limits(wall_seconds=5)
    [run_shell] = shell(fake, workspace=tmp_path, limits=limits, requires_approval=True)
    [run_python] = python(fake, workspace=tmp_path, requires_approval=lambda a: "os" in a["code"])
    assert not shell(fake, workspace=tmp_path)[0].requires_approval  # the library default
    assert run_python.needs_approval({"code": "import os"})
    assert not run_python.needs_approval({"code": "print(1)"})
    attempts: list[tuple[Tool, dict[str, Any]]] = [
        (run_shell, {"command": "rm -rf ."}),
        (run_python, {"code": "import os"}),
    ]
    for t, args in attempts:
        with pytest.raises(ModelRetry, match="needs a human approval"):
            direct(t, **args)  # called without the loop's decision: refused
    assert direct(run_python, code="print(1)").startswith("exit code 0")
    assert fake.calls == [["python3", "-"]]
    model = ScriptedModel([call("run_shell", command="rm app.py"), "Done."])
    agent = Agent(model, tools=[run_shell])
    paused = agent.run_sync("clean up")
    assert paused.status == "input_required" and len(fake.calls) == 1
    denied = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Reject("no")}))
    assert denied.status == "completed" and len(fake.calls) == 1
