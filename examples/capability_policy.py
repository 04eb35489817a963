"""A capability: the one way to extend a run.

This one keeps ``write_file`` inside ``reports/`` (a call elsewhere is denied, and the
model is told why), asks a human before any file is overwritten, and logs every call with
what happened to it. It runs offline on a scripted model:

    python examples/capability_policy.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from loopwise import Agent, Ask, Capability, Deny, ToolCall, tool
from loopwise.messages import ToolResultPart
from loopwise.models.testing import ScriptedModel, call
from loopwise.run import RunContext


class ReportsOnly(Capability):
    """Deny writes outside reports/, ask before overwriting, log every call."""

    name = "reports-only"

    def __init__(self, root: Path):
        self.root = root
        self.log: list[str] = []

    async def before_tool(self, run: RunContext, call: ToolCall) -> Deny | Ask | None:
        if call.name != "write_file":
            return None
        path = Path(str(call.args["path"]))
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("reports",):
            self.log.append(f"denied  {call.name}({path})")
            return Deny(f"{path} is outside reports/; write your report under reports/")
        if (self.root / path).exists():
            return Ask(f"{path} exists and would be overwritten")
        return None

    async def after_tool(
        self, run: RunContext, call: ToolCall, result: ToolResultPart
    ) -> ToolResultPart | None:
        self.log.append(f"ran     {call.name}({call.args}) -> {result.content}")
        return None


def main() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "reports").mkdir()

    @tool
    def write_file(path: str, text: str) -> str:
        """Write a text file in the workspace."""
        (root / path).write_text(text)
        return f"wrote {len(text)} characters to {path}"

    model = ScriptedModel(
        [
            call("write_file", path="/etc/motd", text="hello"),
            call("write_file", path="reports/summary.md", text="# Summary\nAll good."),
            "The summary is in reports/summary.md.",
        ]
    )
    policy = ReportsOnly(root)
    agent = Agent(model, tools=[write_file], capabilities=[policy])
    result = agent.run_sync("Write a summary report.")
    for line in policy.log:
        print(line)
    print(result.status, result.output)


if __name__ == "__main__":
    main()
