"""Built-in toolkits: an agent reads a git repository and writes a report in its workspace.

The tools are real (``loopwise.toolkits.git`` is read-only git without a shell;
``loopwise.toolkits.files`` keeps every path inside the workspace and asks before it
overwrites a file). A FunctionModel plays the model's part offline; pass a real model
(``"anthropic:claude-sonnet-4-6"``) and the same agent runs on it.

    python examples/repo_report.py REPO WORKSPACE
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from loopwise import Agent, Message, ToolResultPart, UserMessage
from loopwise.errors import UsageError
from loopwise.models.testing import FunctionModel, Turn, call
from loopwise.toolkits import files, git


def observations(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


def scripted_brain(messages: list[Message], tools: object) -> Turn:
    """A stand-in for an LLM: asks git who committed, then writes what it saw."""
    seen = observations(messages)
    if not seen:
        question = "Who works on this repository, and what changed last?"
        return [question, call("git_shortlog"), call("git_log", oneline=True, max_count=1)]
    if len(seen) == 2:
        authors = re.findall(r"^\s*(\d+)\t(.+?) <", seen[0].content, re.MULTILINE)
        lines = [f"- {name}: {count} commits" for count, name in authors]
        latest = seen[1].content.splitlines()[0]
        report = "# Repository report\n\n## Commits per author\n" + "\n".join(lines)
        report += f"\n\n## Latest commit\n{latest}\n"
        return call("write_file", path="reports/report.md", content=report)
    return f"Wrote reports/report.md ({seen[-1].content})."


USAGE = "usage: python examples/repo_report.py REPO WORKSPACE"


def main() -> None:
    if len(sys.argv) != 3:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    repo, workspace = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        tools = [*git(repo), *files(workspace)]
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    agent = Agent(FunctionModel(scripted_brain), tools=tools)
    result = agent.run_sync("Write a short report on who works on this repository.")
    print(result.status, result.output)
    print((workspace / "reports" / "report.md").read_text())


if __name__ == "__main__":
    main()
