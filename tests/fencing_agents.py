"""Agents for the lease-fencing tests, importable by worker subprocesses (``LW_AGENTS``).

The model follows the plan in the task, ``"<tag> op op ..."`` (one op per turn, then an
answer); ops are ``charge`` (not idempotent: a repeat charges twice) and ``note``. Every
model and tool call logs a ``start`` line and, when it completes, a ``done`` (model) or
``effect`` (tool) line to ``$LW_COUNT_DIR/calls.log``, with the process id; ``refund``
needs approval. A test *arms* a call (``arm-<key>``): the call writes ``ready-<key>`` and
waits, without doing anything, until ``release-<key>`` exists (so it can be paused with
SIGSTOP, taken over, resumed). ``after-<call id>`` holds the loop *between* steps: after
the call's result, before anything else is written or started.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from loopwise import Agent, ToolContext, tool
from loopwise.capabilities import Capability
from loopwise.events import Event, ToolResulted
from loopwise.messages import AssistantMessage, Message, TextPart, ToolDefinition, UserMessage
from loopwise.models.testing import FunctionModel, ScriptedCall, Turn


def count_dir() -> Path:
    return Path(os.environ["LW_COUNT_DIR"])


def log(line: str) -> None:
    with open(count_dir() / "calls.log", "a") as f:
        f.write(f"{line} pid={os.getpid()} t={time.time():.6f}\n")


def lines(*words: str) -> list[str]:
    """Logged lines whose first words are ``words``."""
    path = count_dir() / "calls.log"
    if not path.exists():
        return []
    n = len(words)
    return [line for line in path.read_text().splitlines() if tuple(line.split()[:n]) == words]


def arm(key: str) -> None:
    (count_dir() / f"arm-{key}").touch()


def release(key: str) -> None:
    (count_dir() / f"release-{key}").touch()


def ready(key: str) -> int | None:
    """The pid of the process whose call waits at ``key``, once it waits."""
    path = count_dir() / f"ready-{key}"
    return int(path.read_text()) if path.exists() and path.read_text() else None


async def gate(key: str) -> None:
    armed = count_dir() / f"arm-{key}"
    if not armed.exists():
        return
    armed.rename(count_dir() / f"fired-{key}")
    (count_dir() / f"ready-{key}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (count_dir() / f"release-{key}").exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - another process releases it
        await asyncio.sleep(0.01)


def _task(messages: list[Message]) -> list[str]:
    first = next(m for m in messages if isinstance(m, UserMessage))
    part = first.parts[0]
    assert isinstance(part, TextPart)
    return part.text.split()


async def plan_model(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    tag, *ops = _task(messages)
    turn = sum(1 for m in messages if isinstance(m, AssistantMessage))
    log(f"model {tag} {turn} start")
    await gate(f"model-{tag}-{turn}")
    log(f"model {tag} {turn} done")
    if turn >= len(ops):
        return f"{tag} done"
    name = ops[turn]
    arg = "text" if name == "note" else "amount"
    value: int | str = f"{tag}.{turn}" if name == "note" else 5
    return [f"step {turn}", ScriptedCall(name, {arg: value}, id=f"{tag}-{turn}-0")]


@tool(idempotent=False)
async def charge(amount: int, ctx: ToolContext[None]) -> str:
    """Charge the card (not idempotent: each completed call charges once more)."""
    log(f"tool charge {ctx.call_id} start approved={ctx.approved}")
    await gate(f"tool-{ctx.call_id}")
    log(f"tool charge {ctx.call_id} effect")
    return f"charged {amount}"


@tool
async def note(text: str, ctx: ToolContext[None]) -> str:
    """Write a note (idempotent)."""
    log(f"tool note {ctx.call_id} start")
    await gate(f"tool-{ctx.call_id}")
    log(f"tool note {ctx.call_id} effect")
    return f"noted {text}"


@tool(requires_approval=True, idempotent=False)
async def refund(amount: int, ctx: ToolContext[None]) -> str:
    """Refund the card (needs approval)."""
    log(f"tool refund {ctx.call_id} start approved={ctx.approved}")
    log(f"tool refund {ctx.call_id} effect")
    return f"refunded {amount}"


class HoldBetweenSteps(Capability):
    """Holds the loop after an armed call's result (``after-<call id>``)."""

    name = "hold"

    async def on_event(self, run: object, event: Event) -> None:
        if isinstance(event, ToolResulted):
            await gate(f"after-{event.call_id}")


agents = {
    "payer": Agent(
        FunctionModel(plan_model),
        tools=[charge, note, refund],
        name="payer",
        capabilities=[HoldBetweenSteps()],
    )
}
