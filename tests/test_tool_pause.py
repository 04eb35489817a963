"""Core hooks the durable engine uses: a tool pausing its own call (ApprovalNeeded), an
error observation given verbatim (ToolFailed), and metadata on resume."""

from __future__ import annotations

import asyncio
from typing import Any

from loopwise import Agent, Approve, Reject, ToolContext, tool
from loopwise.approval import ApprovalNeeded
from loopwise.messages import ToolResultPart, UserMessage
from loopwise.models.testing import ScriptedModel, call
from loopwise.tools import ToolFailed


def _results(messages: list[Any]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


def _pausing_agent(seen: list[tuple[bool, Any]]) -> Agent:
    @tool
    def charge(amount: int, ctx: ToolContext[None]) -> str:
        """Charge a card."""
        seen.append((ctx.approved, dict(ctx.metadata)))
        if not ctx.approved:
            raise ApprovalNeeded(ctx.call_id)
        return f"charged {amount}"

    @tool
    def look() -> str:
        """Look around."""
        return "seen"

    model = ScriptedModel([[call("charge", amount=3), call("look")], "done"])
    return Agent(model, tools=[charge, look])


def test_a_tool_can_pause_its_own_call_and_an_approval_runs_it() -> None:
    seen: list[tuple[bool, Any]] = []
    agent = _pausing_agent(seen)
    paused = agent.run_sync("pay")
    assert paused.status == "input_required"
    [pending] = paused.pending_approvals
    assert pending.tool_name == "charge"
    assert [r.content for r in _results(paused.messages)] == ["seen"]  # the sibling ran
    done = asyncio.run(agent.resume(paused, {pending.call_id: Approve()}, metadata={"k": 1}))
    assert done.status == "completed"
    assert seen == [(False, {}), (True, {"k": 1})]
    assert [r.content for r in _results(done.messages)] == ["charged 3", "seen"]  # call order


def test_rejecting_a_paused_call_tells_the_model() -> None:
    seen: list[tuple[bool, Any]] = []
    agent = _pausing_agent(seen)
    paused = agent.run_sync("pay")
    done = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Reject("no")}))
    assert len(seen) == 1
    [rejected] = [r for r in _results(done.messages) if r.name == "charge"]
    assert rejected.is_error and "rejected by the user: no" in rejected.content


def test_tool_failed_is_shown_verbatim() -> None:
    @tool
    def broken() -> str:
        """Fail."""
        raise ToolFailed("ERROR: exactly this text")

    agent = Agent(ScriptedModel([call("broken"), "ok"]), tools=[broken])
    [result] = _results(agent.run_sync("go").messages)
    assert (result.content, result.is_error) == ("ERROR: exactly this text", True)
