"""Quick start: an agent that finds the largest Python module in a folder.

Runs offline: a FunctionModel plays the model's part (it reads the observations and
decides the next step), while the tools, the loop, parallel calls, budgets and events are
all real. Swap the model for ``"anthropic:claude-sonnet-4-6"`` (with ANTHROPIC_API_KEY
set) and the same agent runs on Claude.

    python examples/quickstart.py [FOLDER]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from loopwise import (
    Agent,
    AssistantMessage,
    Budget,
    Message,
    ToolResultPart,
    UserMessage,
    tool,
)
from loopwise.models.testing import FunctionModel, Turn, call

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "src")


@tool
def list_python_files(folder: str) -> list[str]:
    """List the Python files under a folder, recursively.

    Args:
        folder: The folder to search, relative to the project root.
    """
    base = (ROOT / folder).resolve()
    return sorted(str(p.relative_to(ROOT)) for p in base.rglob("*.py"))


@tool
async def count_lines(path: str) -> int:
    """Count the lines of one file.

    Args:
        path: The file, relative to the project root.
    """
    return len((ROOT / path).read_text(encoding="utf-8").splitlines())


def scripted_brain(messages: list[Message], tools: object) -> Turn:
    """A stand-in for an LLM: decides from what the tools returned so far."""
    results = [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    if not results:
        return ["First I need the list of Python files.", call("list_python_files", folder=".")]
    if len(results) == 1:
        files = json.loads(results[0].content)
        return [f"There are {len(files)} files; I will count their lines in parallel."] + [
            call("count_lines", path=f) for f in files
        ]
    counts = {r.call_id: int(r.content) for r in results[1:] if not r.is_error}
    calls = {
        c.id: c.args.get("path")
        for m in messages
        if isinstance(m, AssistantMessage)
        for c in m.tool_calls
    }
    path, lines = max(((calls[cid], n) for cid, n in counts.items()), key=lambda x: x[1])
    total = sum(counts.values())
    return f"The largest module is {path} with {lines} lines ({total} lines in all)."


agent = Agent(
    FunctionModel(scripted_brain),
    tools=[list_python_files, count_lines],
    budget=Budget(max_tool_calls=200, max_seconds=60),
)


async def main() -> None:
    stream = agent.stream(f"Which Python module under {ROOT} is the largest?")
    async for event in stream:
        if event.type == "model_text" and not event.final:
            print(f"[step {event.step}] thought: {event.text}")
        elif event.type == "tool_call" and event.name == "list_python_files":
            print(f"[step {event.step}] call: {event.name}({event.args})")
        elif event.type == "run_finished":
            print(
                f"[done] status={event.status} steps={event.steps} "
                f"tokens={event.usage.total_tokens}"
            )
    print(stream.result.output)


if __name__ == "__main__":
    asyncio.run(main())
