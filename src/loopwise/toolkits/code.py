"""Tools that run model-written code in an OS sandbox: ``run_python`` and ``run_shell``.

>>> from loopwise.toolkits.code import python, shell
>>> tools = [*python(workspace="work"), *shell(workspace="work")]
>>> [t.name for t in tools]
['run_python', 'run_shell']

With no ``sandbox`` given, :func:`loopwise.sandbox.default_sandbox` is resolved on the
first call; when no backend works the call returns an error naming what to install.
``requires_approval`` (a bool, or a predicate on the call's arguments) pauses the run for a
human decision before code runs; the ``loopwise`` command turns it on for both tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelRetry
from ..sandbox import Limits, Sandbox, SandboxResult, SandboxUnavailable, default_sandbox
from ..tools import ApprovalRule, Tool, ToolContext, tool

__all__ = ["DEFAULT_LIMITS", "python", "shell"]

DEFAULT_LIMITS = Limits(max_output_bytes=16_000)
"""The tools' default limits: :class:`Limits` defaults, with 16 kB of output per stream."""


class _Runner:
    """Runs commands for the tools in one workspace, finding a sandbox on first use."""

    def __init__(self, sandbox: Sandbox | None, workspace: Path | str, limits: Limits | None):
        self.sandbox = sandbox
        self.workspace = Path(workspace).resolve()
        self.limits = limits or DEFAULT_LIMITS

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> str:
        sandbox = await self._sandbox()
        self.workspace.mkdir(parents=True, exist_ok=True)
        result = await sandbox.run(argv, workspace=self.workspace, stdin=stdin, limits=self.limits)
        return self.report(result)

    async def _sandbox(self) -> Sandbox:
        if self.sandbox is None:
            try:
                self.sandbox = await asyncio.to_thread(default_sandbox)
            except SandboxUnavailable as exc:
                raise ModelRetry(
                    f"Cannot run code: {exc} This is a setup problem on the user's machine; "
                    "do not retry, tell the user."
                ) from None
        return self.sandbox

    def report(self, result: SandboxResult) -> str:
        """The result for the model, with a hint when a limit stopped the command."""
        text = result.summary()
        hint = _limit_hint(result, self.limits)
        return f"{text}\n{hint}" if hint else text

    @property
    def max_output_chars(self) -> int:
        """Room for both capped streams plus the status and file list: never cut twice."""
        return 2 * self.limits.max_output_bytes + 12_000

    def describe_limits(self) -> str:
        lim = self.limits
        return (
            f"Limits: {lim.wall_seconds:g} s wall clock, {lim.cpu_seconds:g} s CPU per "
            f"process, {lim.memory_mb} MB memory per process, {lim.max_processes} "
            f"processes, files up to {lim.max_file_mb} MB, output cut after "
            f"{lim.max_output_bytes} bytes per stream."
        )


def _limit_hint(result: SandboxResult, limits: Limits) -> str:
    if result.timed_out:
        return (
            f"hint: stopped at the {limits.wall_seconds:g} s wall-clock limit; "
            "make the work smaller or faster."
        )
    if result.killed_by == "cpu":
        return f"hint: stopped at the {limits.cpu_seconds:g} s CPU-time limit."
    if result.killed_by == "file_size":
        return f"hint: a file grew past the {limits.max_file_mb} MB limit."
    if "MemoryError" in result.stderr or "Cannot allocate memory" in result.stderr:
        return f"hint: memory is limited to {limits.memory_mb} MB per process."
    return ""


def _common_notes(runner: _Runner) -> str:
    return (
        "It runs in an isolated sandbox with NO network access. The working directory is "
        "/workspace (the user's workspace, read-write; files written there persist); /tmp "
        "is private and discarded; the rest of the system is read-only. "
        + runner.describe_limits()
        + " Returns the exit code, duration, files written, stdout and stderr."
    )


def _check_approved(
    rule: ApprovalRule, ctx: ToolContext[Any] | None, name: str, args: dict[str, Any]
) -> None:
    """Refuse a call that needed a human decision and did not get one (defence in depth)."""
    if ctx is not None and ctx.approved:
        return
    try:
        needed = rule if isinstance(rule, bool) else bool(rule(args))
    except Exception:
        needed = True
    if needed:
        raise ModelRetry(
            f"Running {name} needs a human approval it did not get; do not retry, "
            "tell the user what you wanted to run."
        )


def python(
    sandbox: Sandbox | None = None,
    *,
    workspace: Path | str,
    limits: Limits | None = None,
    requires_approval: ApprovalRule = False,
) -> list[Tool]:
    """A ``run_python`` tool executing Python 3 code in ``sandbox`` (default: found on use).

    ``requires_approval``: True (or a predicate on ``{"code": ...}``) asks a human first.
    """
    runner = _Runner(sandbox, workspace, limits)
    description = (
        "Run a Python 3 program and return what it printed. Use print() to show results; "
        "assume only the standard library is installed. " + _common_notes(runner)
    )

    @tool(
        name="run_python",
        description=description,
        idempotent=False,
        max_output_chars=runner.max_output_chars,
        requires_approval=requires_approval,
        effects=["write"],  # sandboxed: no network, the workspace only
    )
    async def run_python(ctx: ToolContext[Any], code: str) -> str:
        """Run Python code.

        Args:
            code: The complete Python 3 program to run (source text, not a file name).
        """
        _check_approved(requires_approval, ctx, "run_python", {"code": code})
        return await runner.run(["python3", "-"], stdin=code.encode("utf-8"))

    return [run_python]


def shell(
    sandbox: Sandbox | None = None,
    *,
    workspace: Path | str,
    limits: Limits | None = None,
    requires_approval: ApprovalRule = False,
) -> list[Tool]:
    """A ``run_shell`` tool running ``/bin/sh -c COMMAND`` in ``sandbox``.

    ``requires_approval``: True (or a predicate on ``{"command": ...}``) asks a human first.
    """
    runner = _Runner(sandbox, workspace, limits)
    description = (
        "Run a POSIX shell command line (/bin/sh -c) and return its output. Common "
        "command-line tools are available. " + _common_notes(runner)
    )

    @tool(
        name="run_shell",
        description=description,
        idempotent=False,
        max_output_chars=runner.max_output_chars,
        requires_approval=requires_approval,
        effects=["write"],  # sandboxed: no network, the workspace only
    )
    async def run_shell(ctx: ToolContext[Any], command: str) -> str:
        """Run a shell command.

        Args:
            command: The command line, run by /bin/sh -c in /workspace.
        """
        _check_approved(requires_approval, ctx, "run_shell", {"command": command})
        return await runner.run(["/bin/sh", "-c", command])

    return [run_shell]
