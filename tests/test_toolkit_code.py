"""The run_python / run_shell tools: unit tests with a fake sandbox, then real agent runs.

The end-to-end tests need bubblewrap: they skip with the reason without it, and fail under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import doctest
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import loopwise.toolkits.code
from loopwise import Agent, ToolResultPart
from loopwise.models.testing import ScriptedModel, call
from loopwise.sandbox import (
    BubblewrapSandbox,
    Limits,
    Sandbox,
    SandboxResult,
    SandboxUnavailable,
)
from loopwise.toolkits.code import python, shell


@dataclass
class FakeSandbox:
    """Records what the tools ask for and answers with a fixed result."""

    result: SandboxResult
    name: str = "fake"
    calls: list[dict[str, object]] = field(default_factory=list)

    async def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path | str,
        stdin: bytes | None = None,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> SandboxResult:
        self.calls.append(
            {"argv": list(argv), "workspace": workspace, "stdin": stdin, "limits": limits}
        )
        return self.result


def results(model: ScriptedModel) -> list[list[ToolResultPart]]:
    """The tool results the model received, request by request."""
    return [
        [p for p in request.messages[-1].parts if isinstance(p, ToolResultPart)]
        for request in model.requests[1:]
    ]


def test_tools_shape(tmp_path: Path) -> None:
    fake = FakeSandbox(SandboxResult(0, "", "", 0.1))
    assert isinstance(fake, Sandbox)
    [run_python] = python(fake, workspace=tmp_path)
    [run_shell] = shell(fake, workspace=tmp_path, limits=Limits(wall_seconds=5))
    assert (run_python.name, run_shell.name) == ("run_python", "run_shell")
    assert not run_python.idempotent and not run_shell.idempotent
    for t in (run_python, run_shell):
        assert "NO network" in t.description and "/workspace" in t.description
    assert "5 s wall clock" in run_shell.description and "60 s wall clock" in run_python.description
    assert run_python.parameters["required"] == ["code"]
    assert run_shell.parameters["properties"]["command"]["type"] == "string"
    failed, attempted = doctest.testmod(loopwise.toolkits.code)
    assert attempted > 0 and failed == 0


def test_code_goes_through_stdin_and_results_are_summarised(tmp_path: Path) -> None:
    ws = tmp_path / "new-ws"
    fake = FakeSandbox(SandboxResult(0, "42\n", "", 0.25, files_written=["out.txt"]))
    [run_python] = python(fake, workspace=ws)
    [run_shell] = shell(fake, workspace=ws)
    text = asyncio.run(run_python.call({"code": "print(6 * 7)"}, None))
    assert text == "exit code 0; duration 0.25s\nfiles written: out.txt\nstdout:\n42\n"
    asyncio.run(run_shell.call({"command": "ls -l"}, None))
    first, second = fake.calls
    assert first["argv"] == ["python3", "-"] and first["stdin"] == b"print(6 * 7)"
    assert second["argv"] == ["/bin/sh", "-c", "ls -l"] and second["stdin"] is None
    assert first["workspace"] == ws.resolve() and ws.is_dir()  # created on first use


@pytest.mark.parametrize(
    ("result", "hint"),
    [
        (SandboxResult(None, "", "", 60.0, timed_out=True, killed_by="timeout"), "wall-clock"),
        (SandboxResult(152, "", "", 30.0, killed_by="cpu"), "CPU-time limit"),
        (SandboxResult(153, "", "", 0.1, killed_by="file_size"), "64 MB limit"),
        (SandboxResult(1, "", "MemoryError\n", 0.1), "memory is limited to 512 MB"),
    ],
)
def test_limits_are_explained(tmp_path: Path, result: SandboxResult, hint: str) -> None:
    [run_shell] = shell(FakeSandbox(result), workspace=tmp_path)
    assert hint in asyncio.run(run_shell.call({"command": "x"}, None))


def test_no_backend_is_a_clear_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> Sandbox:
        raise SandboxUnavailable(
            "No sandbox can run code here: bubblewrap cannot run here ('bwrap' not found); "
            "Docker cannot run here (no engine answers). To fix it, install bubblewrap: "
            "apt-get install bubblewrap (or start a Docker engine)."
        )

    monkeypatch.setattr(loopwise.toolkits.code, "default_sandbox", unavailable)
    model = ScriptedModel([call("run_python", code="print(1)"), "I cannot run code here."])
    done = Agent(model, tools=python(workspace=tmp_path)).run_sync("run it")
    [[error]] = results(model)
    print(error.content)
    assert error.is_error and done.status == "completed"
    assert "apt-get install bubblewrap" in error.content and "do not retry" in error.content


# ---------------------------------------------------------------------------------------
# With a real sandbox


@pytest.fixture
def sandbox() -> BubblewrapSandbox:
    box = BubblewrapSandbox()
    try:
        box.check()
    except SandboxUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"bubblewrap is required under CI but unavailable: {exc}")
        pytest.skip(f"bubblewrap unavailable: {exc}")
    return box


def test_agent_corrects_bad_calls_then_runs_python_and_shell(
    sandbox: BubblewrapSandbox, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    script = [
        call("run_python", source="print(1)"),  # wrong field name
        call("run_python", code=42),  # wrong type
        call("run_python", code="print(6 * 7)\nopen('answer.txt', 'w').write('42')"),
        call("run_shell", command="cat answer.txt && echo && ls /workspace"),
        call("run_shell", command="curl -sS -m 3 http://127.0.0.1:9/ || exit 9"),
        "The answer is 42.",
    ]
    model = ScriptedModel(script)
    tools = [*python(sandbox, workspace=ws), *shell(workspace=ws)]  # shell finds its own
    done = Agent(model, tools=tools).run_sync("What is 6 * 7? Save it.")
    assert done.status == "completed" and done.output == "The answer is 42."
    [wrong_field], [wrong_type], [ran], [shown], [offline] = results(model)
    for r in (wrong_field, wrong_type, ran, shown, offline):
        print(f"--- {r.name} (error={r.is_error})\n{r.content}")
    assert wrong_field.is_error and "'source': unknown field" in wrong_field.content
    assert "'code': Field required" in wrong_field.content
    assert wrong_type.is_error and "'code': Input should be a valid string" in wrong_type.content
    assert not ran.is_error
    assert ran.content.startswith("exit code 0; duration ")
    assert "files written: answer.txt\nstdout:\n42\n" in ran.content
    assert shown.content.endswith("stdout:\n42\nanswer.txt\n")
    assert offline.content.startswith("exit code 9;") and "curl: (7)" in offline.content
    assert (ws / "answer.txt").read_text() == "42"


def test_tool_output_is_capped_and_timeouts_reported(
    sandbox: BubblewrapSandbox, tmp_path: Path
) -> None:
    limits = Limits(wall_seconds=2, max_output_bytes=1_000)
    [run_python] = python(sandbox, workspace=tmp_path, limits=limits)
    [run_shell] = shell(sandbox, workspace=tmp_path, limits=limits)
    big = asyncio.run(run_python.call({"code": "print('y' * 50_000)"}, None))
    assert "... [truncated: 49001 more bytes]" in big and len(big) < 1_200
    slow = asyncio.run(run_shell.call({"command": "sleep 30"}, None))
    print(slow)
    assert slow.startswith("timed out after 2.0s (killed)") and "2 s wall-clock limit" in slow
