"""``loopwise run --tools ...``: built-in toolkits by name, and approval on the terminal.

Every built-in tool that changes or deletes something asks first: overwriting, appending
to or deleting a file, and running Python or shell code (``--approve`` says how).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from ..approval import ApprovalRequest, Approve, Decision, Reject
from ..errors import UsageError
from ..tools import Tool
from .display import printable

__all__ = ["TOOLKIT_NAMES", "TerminalApprover", "ToolSpec", "build_tools", "parse_tool_specs"]

TOOLKIT_NAMES = (
    "files", "http", "git", "python", "shell", "scripts", "system", "documents", "browser"
)  # fmt: skip
_NEEDS_WORKSPACE = {"files", "git", "python", "shell", "documents", "browser"}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One ``--tools`` item: a toolkit name and its optional ``=ARG`` (a path)."""

    name: str
    arg: str | None = None


def parse_tool_specs(values: Sequence[str]) -> list[ToolSpec]:
    """Parse ``files,http,git=REPO`` items (the option may also be repeated)."""
    specs: list[ToolSpec] = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, _, arg = item.partition("=")
            if name not in TOOLKIT_NAMES:
                raise UsageError(
                    f"--tools: unknown toolkit {name!r}; choose from {', '.join(TOOLKIT_NAMES)}."
                )
            if name == "scripts" and not arg:
                raise UsageError("--tools scripts needs a directory: --tools scripts=DIR.")
            specs.append(ToolSpec(name, arg or None))
    return specs


def needs_workspace(specs: Sequence[ToolSpec]) -> bool:
    return any(s.name in _NEEDS_WORKSPACE for s in specs)


def build_tools(
    specs: Sequence[ToolSpec], *, workspace: Path | None, allow_hosts: Sequence[str] = ()
) -> list[Tool]:
    """The tools of every named toolkit (imported only when named)."""
    tools: list[Tool] = []
    for spec in specs:
        tools.extend(_toolkit(spec, workspace, allow_hosts))
    return tools


def _toolkit(spec: ToolSpec, workspace: Path | None, allow_hosts: Sequence[str]) -> list[Tool]:
    from .. import toolkits

    where = Path(spec.arg) if spec.arg else workspace
    if where is None:
        raise UsageError(f"--tools {spec.name} needs a directory.")
    match spec.name:
        case "files":
            return toolkits.files(where)
        case "http":
            return toolkits.http(allow=list(allow_hosts))
        case "git":
            return _git(where, named=spec.arg is not None)
        case "python":  # code can change or delete any workspace file: ask first
            return toolkits.python(workspace=where, requires_approval=True)
        case "shell":
            return toolkits.shell(workspace=where, requires_approval=True)
        case "scripts":
            return toolkits.scripts(where)
        case "system":
            logs = spec.arg.split(os.pathsep) if spec.arg else ["/var/log"]
            return toolkits.system(log_dirs=logs)
        case "documents":
            return toolkits.documents(where)
        case "browser":
            return toolkits.browser(workspace=where, allow=list(allow_hosts))
    raise UsageError(f"unknown toolkit {spec.name!r}")  # pragma: no cover


def _git(where: Path, *, named: bool) -> list[Tool]:
    """The git tools on ``where``; on a workspace that is no repository they are left out
    with a note (a repository named with ``git=REPO`` must be one)."""
    from .. import toolkits

    try:
        return toolkits.git(where)
    except UsageError as exc:
        if named:
            raise
        note = f"note: the git tools are left out: {exc} Use --tools git=REPO, or git init it."
        sys.stderr.write(printable(" ".join(note.split())) + "\n")
        return []


ApproveMode = Literal["ask", "yes", "no"]


@dataclass(slots=True)
class TerminalApprover:
    """Asks on the terminal before a gated call: approve once, always for this tool, or deny.

    ``mode="yes"`` approves and ``mode="no"`` rejects every call without asking. An answer
    that cannot be read (end of input) is a denial.
    """

    mode: ApproveMode = "ask"
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    always: set[str] = field(default_factory=set)

    async def __call__(self, request: ApprovalRequest) -> Decision:
        if self.mode == "yes" or request.tool_name in self.always:
            return Approve()
        if self.mode == "no":
            return Reject("denied by --approve no")
        args = json.dumps(request.args, ensure_ascii=False)
        if len(args) > 2000:
            args = args[:2000] + "…"
        shown = printable(f"{request.tool_name} {args}")  # no escape sequence reaches the tty
        while True:
            self.stderr.write(
                f"\napproval needed: {shown}\n"
                "  [y] approve once   [a] always for this tool   [n] deny > "
            )
            self.stderr.flush()
            line = await asyncio.to_thread(self.stdin.readline)
            answer = line.strip().lower()
            if not line or answer in ("n", "no"):
                return Reject("denied on the terminal")
            if answer in ("y", "yes"):
                return Approve()
            if answer in ("a", "always"):
                self.always.add(request.tool_name)
                return Approve()
