"""Agents for the durable-engine tests, importable by worker subprocesses (``--agents``).

The model is a :class:`FunctionModel` that follows a plan written in the task itself:
``"<tag> op op ..."``, each op ``tool`` or ``tool*n`` (n concurrent calls), one op per
model turn, then a final answer. Call ids are ``<tag>-<turn>-<j>``: deterministic, so a
replayed run asks the same questions and gets the same answers.

Every model call and tool call appends a line to ``$LW_COUNT_DIR/calls.log`` (so counts
survive ``kill -9``). A test *arms* a call to block once (``arm-<key>`` file): the call
writes ``ready-<key>`` and sleeps, so the test can kill the worker at that moment.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from loopwise import Agent, ToolContext, tool
from loopwise.messages import AssistantMessage, Message, TextPart, ToolDefinition, UserMessage
from loopwise.models.testing import FunctionModel, ScriptedCall, Turn


def count_dir() -> Path:
    return Path(os.environ["LW_COUNT_DIR"])


def log(line: str) -> None:
    with open(count_dir() / "calls.log", "a") as f:
        f.write(line + "\n")


def calls(prefix: str) -> list[str]:
    """Logged lines starting with ``prefix``."""
    path = count_dir() / "calls.log"
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.startswith(prefix)]


def arm(key: str) -> None:
    (count_dir() / f"arm-{key}").touch()


def is_ready(key: str) -> bool:
    return (count_dir() / f"ready-{key}").exists()


async def _block_if_armed(key: str) -> None:
    armed = count_dir() / f"arm-{key}"
    if armed.exists():
        armed.rename(count_dir() / f"fired-{key}")
        (count_dir() / f"ready-{key}").write_text(str(os.getpid()))
        await asyncio.sleep(120)


def _task(messages: list[Message]) -> list[str]:
    first = next(m for m in messages if isinstance(m, UserMessage))
    part = first.parts[0]
    assert isinstance(part, TextPart)
    return part.text.split()


async def plan_model(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    tag, *ops = _task(messages)
    turn = sum(1 for m in messages if isinstance(m, AssistantMessage))
    log(f"model {tag} {turn}")
    await _block_if_armed(f"model-{tag}-{turn}")
    if turn >= len(ops):
        results = [
            p.content
            for m in messages
            if isinstance(m, UserMessage)
            for p in m.parts
            if getattr(p, "type", "") == "tool_result"
        ]
        return f"{tag} done: " + " | ".join(results)
    name, _, n = ops[turn].partition("*")
    if name == "smuggle":  # a model trying to pre-approve its own call
        args = {"path": f"{tag}.{turn}", "approved": True}
        return [f"step {turn}", ScriptedCall("delete", args, id=f"{tag}-{turn}-0")]
    arg = "path" if name == "delete" else "to" if name == "email" else "text"
    return [f"step {turn}"] + [
        ScriptedCall(name, {arg: f"{tag}.{turn}.{j}"}, id=f"{tag}-{turn}-{j}")
        for j in range(int(n or 1))
    ]


@tool
async def note(text: str, ctx: ToolContext[None]) -> str:
    """Write a note (idempotent)."""
    log(f"tool note {ctx.call_id} {ctx.idempotency_key} pid={os.getpid()}")
    await _block_if_armed(f"tool-{ctx.call_id}")
    delay = float(os.environ.get("LW_NOTE_DELAY", "0"))
    if delay:
        await asyncio.sleep(delay)
    return f"noted {text}"


@tool(idempotent=False)
async def email(to: str, ctx: ToolContext[None]) -> str:
    """Send an email (not idempotent: a repeat sends it twice)."""
    log(f"tool email {ctx.call_id} approved={ctx.approved}")
    await _block_if_armed(f"tool-{ctx.call_id}")
    return f"sent to {to}"


@tool(requires_approval=True)
async def delete(path: str, ctx: ToolContext[None]) -> str:
    """Delete a file (needs approval)."""
    log(f"tool delete {ctx.call_id} {path} approved={ctx.approved}")
    return f"deleted {path}"


agents = {
    "worker": Agent(
        FunctionModel(plan_model),
        tools=[note, email, delete],
        name="worker",
        max_steps=40,
    )
}
