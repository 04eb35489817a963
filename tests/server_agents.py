"""Agents the service tests (and ``loopwise serve --agents server_agents``) run.

Each is driven by a :class:`FunctionModel` whose answer depends only on the messages, so a
replayed run asks the same questions and gets the same answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loopwise import Agent, tool
from loopwise.messages import Message, ToolDefinition, ToolResultPart, UserMessage
from loopwise.models.testing import FunctionModel, ScriptedCall, call


def _results(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(requires_approval=True, idempotent=False)
def delete_file(path: str) -> str:
    """Delete a file (needs a human's approval)."""
    return f"deleted {path}"


@tool
async def pause(seconds: float) -> str:
    """Wait a while."""
    await asyncio.sleep(seconds)
    return "waited"


def _counting(messages: list[Message], tools: list[ToolDefinition]) -> str | ScriptedCall:
    """Three calls of add, then the answer."""
    done = len(_results(messages))
    if done < 3:
        return call("add", a=done, b=1)
    return f"The total is {_results(messages)[-1].content}."


def _gated(messages: list[Message], tools: list[ToolDefinition]) -> str | ScriptedCall:
    """Asks to delete a file, then reports what the tool said."""
    results = _results(messages)
    if not results:
        return call("delete_file", path="notes.txt")
    return f"Result: {results[-1].content}"


def _slow(messages: list[Message], tools: list[ToolDefinition]) -> str | ScriptedCall:
    """Waits 0.2 s per step for 50 steps (long enough to be cancelled)."""
    done = len(_results(messages))
    if done < 50:
        return call("pause", seconds=0.2)
    return "finally done"


counting = Agent(FunctionModel(_counting), tools=[add], name="counting", system="Count to three.")
gated = Agent(
    FunctionModel(_gated), tools=[delete_file], name="gated", system="Delete files carefully."
)
slow = Agent(FunctionModel(_slow), tools=[pause], name="slow", max_steps=60)

agents: dict[str, Agent[Any, Any]] = {"counting": counting, "gated": gated, "slow": slow}
