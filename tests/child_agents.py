"""Agents for the crash tests of child runs (``LW_AGENTS=child_agents`` in worker processes).

``chief`` asks ``n`` scribes at once (an agent used as a tool, concurrent calls), then
answers with their observations; with ``nested`` it asks a ``boss`` per scribe instead,
which asks the scribe itself (a child's child). The task is ``"<tag> <n> <lines>"`` (plus
``nested``); scribe ``j`` gets ``"<tag>.<j> <lines>"`` (under a boss ``"<tag>.<j>.g
<lines>"``) and appends one line per turn to ``$LW_COUNT_DIR/ledger.log`` with ``append``,
a tool that is not idempotent. Every model call is logged to ``calls.log``
(``chief|boss|scribe <tag> <turn>``). A scribe's model call and an ``append`` call can be
armed to block once (``scribe-<tag>-<turn>``, ``append-<call id>``), *before* they log or
write anything: a call killed there was never made. A ``slow-scribe-<tag>-<turn>`` file
makes that model call wait 0.5 s first (a replayed call, never made, does not wait).
"""

from __future__ import annotations

import asyncio
from typing import Any

from durable_agents import _block_if_armed, count_dir, log
from loopwise import Agent, ToolContext, tool
from loopwise.models.testing import FunctionModel, ScriptedCall, Turn
from team_agents import _results, _task, _turn

LEDGER = "ledger.log"


def ledger() -> list[str]:
    path = count_dir() / LEDGER
    return path.read_text().splitlines() if path.exists() else []


@tool(idempotent=False)
async def append(line: str, ctx: ToolContext[None]) -> str:
    """Append a line to the ledger (not idempotent: a repeat appends it twice)."""
    await _block_if_armed(f"append-{ctx.call_id}")
    await asyncio.to_thread(_write, line)
    return f"appended {line}"


def _write(line: str) -> None:
    with open(count_dir() / LEDGER, "a") as f:
        f.write(line + "\n")


async def scribe_model(messages: list[Any], tools: list[Any]) -> Turn:
    tag, lines = _task(messages)[:2]
    turn = _turn(messages)
    if (count_dir() / f"slow-scribe-{tag}-{turn}").exists():
        await asyncio.sleep(0.5)
    await _block_if_armed(f"scribe-{tag}-{turn}")
    log(f"scribe {tag} {turn}")
    if turn < int(lines):
        call = ScriptedCall("append", {"line": f"{tag}.{turn}"}, id=f"{tag}-a{turn}")
        return [f"line {turn}", call]
    seen = [r.content for r in _results(messages)]
    return f"{tag} wrote {lines}: " + ", ".join(seen)


async def boss_model(messages: list[Any], tools: list[Any]) -> Turn:
    tag, lines = _task(messages)[:2]
    turn = _turn(messages)
    log(f"boss {tag} {turn}")
    if turn == 0:
        return ScriptedCall("scribe", {"task": f"{tag}.g {lines}"}, id=f"{tag}-g")
    return f"{tag} boss: " + " | ".join(r.content for r in _results(messages))


async def chief_model(messages: list[Any], tools: list[Any]) -> Turn:
    tag, n, lines, *mode = _task(messages)
    turn = _turn(messages)
    log(f"chief {tag} {turn}")
    helper = "boss" if mode == ["nested"] else "scribe"
    if turn == 0:
        asks = [
            ScriptedCall(helper, {"task": f"{tag}.{j} {lines}"}, id=f"{tag}-s{j}")
            for j in range(int(n))
        ]
        return ["asking", *asks]
    return f"{tag}: " + " | ".join(r.content for r in _results(messages))


scribe = Agent(FunctionModel(scribe_model), tools=[append], name="scribe", max_steps=50)
boss = Agent(FunctionModel(boss_model), tools=[scribe.as_tool()], name="boss")
chief = Agent(FunctionModel(chief_model), tools=[scribe.as_tool(), boss.as_tool()], name="chief")

agents: dict[str, Agent[Any, Any]] = {"chief": chief}
