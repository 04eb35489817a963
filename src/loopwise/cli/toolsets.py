"""``loopwise run --tools ...``: built-in toolkits by name, and approval on the terminal.

Every built-in tool that changes or deletes something asks first: overwriting, appending
to or deleting a file, and running Python or shell code (``--approve`` says how).
"""

from __future__ import annotations

import asyncio
import difflib
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
DIFF_LINES = 80
_READ_LIMIT = 256 * 1024


def overwrite_diff(workspace: Path | None, request: ApprovalRequest) -> str | None:
    """A unified diff of what ``write_file`` would change in an existing workspace file
    (read without following links out of the workspace), cut to ``DIFF_LINES`` lines."""
    path, content = request.args.get("path"), request.args.get("content")
    if workspace is None or request.tool_name != "write_file":
        return None
    if not isinstance(path, str) or not isinstance(content, str):
        return None
    old = _read_workspace_file(workspace, path)
    if old is None:
        return None
    lines = list(
        difflib.unified_diff(
            old.splitlines(), content.splitlines(), f"a/{path}", f"b/{path}", lineterm=""
        )
    )
    if not lines:
        return "(the new content is the same as the file's)\n"
    more = len(lines) - DIFF_LINES
    shown = lines[:DIFF_LINES] + ([f"… {more} more diff lines"] if more > 0 else [])
    return "\n".join(shown) + "\n"


def _read_workspace_file(workspace: Path, path: str) -> str | None:
    from ..toolkits._paths import READ_FLAGS, Workspace

    try:
        ws = Workspace(workspace)
        target = ws.resolve(path)
        if ws.kind(target) != "file":
            return None
        fd = ws.open_file(target, READ_FLAGS)
    except Exception:  # refused or missing: the tool itself will say so
        return None
    try:
        data = os.read(fd, _READ_LIMIT)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


@dataclass(slots=True)
class TerminalApprover:
    """Asks on the terminal before a gated call: approve once, always for this tool, or deny.

    ``mode="yes"`` approves and ``mode="no"`` rejects every call without asking. An answer
    that cannot be read (end of input) is a denial.
    """

    mode: ApproveMode = "ask"
    workspace: Path | None = None
    """Where the file tools work: an overwrite shows its diff against the file there."""
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
        diff = overwrite_diff(self.workspace, request)
        if diff:
            self.stderr.write(f"\n{printable(diff)}")
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
