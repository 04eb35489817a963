"""Human approval: pause as input_required, resume with decisions bound to call ids."""

import asyncio

import pytest

from loopwise import (
    Agent,
    ApprovalRequest,
    Approve,
    Reject,
    ToolContext,
    ToolResultPart,
    UsageError,
    tool,
)
from loopwise.events import ApprovalRequested
from loopwise.messages import dump_messages, load_messages
from loopwise.models.testing import ScriptedModel, call

deleted: list[str] = []


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    deleted.append(path)
    return f"deleted {path}"


@tool
def list_files() -> list[str]:
    """List files."""
    return ["a.txt", "b.txt"]


@pytest.fixture(autouse=True)
def _clear() -> None:
    deleted.clear()


def last_results(model: ScriptedModel) -> list[ToolResultPart]:
    return [p for p in model.requests[-1].messages[-1].parts if isinstance(p, ToolResultPart)]  # type: ignore[union-attr]


def test_pause_then_approve() -> None:
    model = ScriptedModel([[call("list_files"), call("delete_file", path="a.txt")], "Deleted."])
    agent = Agent(model, tools=[delete_file, list_files])
    paused = agent.run_sync("delete a.txt")
    assert paused.status == "input_required" and paused.stop_reason == "approval_required"
    [pending] = paused.pending_approvals
    assert (pending.tool_name, pending.args) == ("delete_file", {"path": "a.txt"})
    assert deleted == []
    # The paused run is plain data: its transcript survives JSON.
    paused.messages = load_messages(dump_messages(paused.messages))
    done = asyncio.run(agent.resume(paused, {pending.call_id: Approve()}))
    assert done.status == "completed" and deleted == ["a.txt"]
    assert [r.content for r in last_results(model)] == ['["a.txt", "b.txt"]', "deleted a.txt"]
    assert done.steps == 2


def test_reject_tells_the_model() -> None:
    model = ScriptedModel([call("delete_file", path="a.txt"), "Not deleted."])
    agent = Agent(model, tools=[delete_file])
    paused = agent.run_sync("delete a.txt")
    call_id = paused.pending_approvals[0].call_id
    done = asyncio.run(agent.resume(paused, {call_id: Reject("keep it")}))
    assert done.output == "Not deleted." and deleted == []
    [result] = last_results(model)
    assert result.is_error and "rejected by the user: keep it" in result.content


def test_edited_arguments_are_validated() -> None:
    model = ScriptedModel([call("delete_file", path="a.txt"), "ok", "ok"])
    agent = Agent(model, tools=[delete_file])
    paused = agent.run_sync("go")
    cid = paused.pending_approvals[0].call_id
    asyncio.run(agent.resume(paused, {cid: Approve(arguments={"path": "b.txt"})}))
    assert deleted == ["b.txt"]


def test_decisions_must_match_pending_calls() -> None:
    model = ScriptedModel([call("delete_file", path="a.txt")])
    agent = Agent(model, tools=[delete_file])
    paused = agent.run_sync("go")
    with pytest.raises(UsageError, match="No pending call"):
        asyncio.run(agent.resume(paused, {"other-id": True}))
    with pytest.raises(UsageError, match="no decision"):
        asyncio.run(agent.resume(paused, {}))


def test_callback_decides() -> None:
    asked: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> bool:
        asked.append(request)
        return request.args["path"] != "keep.txt"

    model = ScriptedModel(
        [[call("delete_file", path="a.txt"), call("delete_file", path="keep.txt")], "ok"]
    )
    result = Agent(model, tools=[delete_file], approve=approve).run_sync("go")
    assert result.status == "completed"
    assert deleted == ["a.txt"] and len(asked) == 2
    assert last_results(model)[1].is_error


def test_approval_requested_event_and_smuggled_flag() -> None:
    model = ScriptedModel([call("delete_file", path="a.txt", approved=True)])
    agent = Agent(model, tools=[delete_file])

    async def collect() -> list[object]:
        return [e async for e in agent.stream("go")]

    events = asyncio.run(collect())
    # An extra "approved" argument is an invalid call, never an approval.
    assert not [e for e in events if isinstance(e, ApprovalRequested)]
    assert deleted == []


existing = {"a.txt"}
seen_approved: list[tuple[str, bool]] = []


@tool(requires_approval=lambda args: args["path"] in existing)
def save(ctx: ToolContext[None], path: str) -> str:
    """Save a file; overwriting an existing one needs approval."""
    seen_approved.append((path, ctx.approved))
    return f"saved {path}"


@tool(requires_approval=lambda args: args["missing"])
def broken_rule(path: str) -> str:
    """A tool whose approval rule raises."""
    return path


def test_approval_rule_on_arguments() -> None:
    seen_approved.clear()
    model = ScriptedModel([[call("save", path="new.txt"), call("save", path="a.txt")], "Done."])
    agent = Agent(model, tools=[save])
    paused = agent.run_sync("save both")
    # The new file was not gated (it ran); only the overwrite waits.
    [pending] = paused.pending_approvals
    assert pending.args == {"path": "a.txt"} and seen_approved == [("new.txt", False)]
    done = asyncio.run(agent.resume(paused, {pending.call_id: Approve()}))
    assert done.status == "completed"
    assert seen_approved == [("new.txt", False), ("a.txt", True)]


def test_approval_rule_that_raises_asks() -> None:
    assert broken_rule.needs_approval({"path": "x"}) is True
    assert save.needs_approval({"path": "b.txt"}) is False
