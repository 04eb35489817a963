"""Cancellation: the run ends as cancelled, and tools are cancelled cleanly."""

import asyncio

import pytest

from loopwise import Agent, tool
from loopwise.models.testing import ScriptedModel, call


def make_slow_tool(started: asyncio.Event, cleaned: list[str]):  # type: ignore[no-untyped-def]
    @tool
    async def slow_job() -> str:
        """A long job."""
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("cleanup ran")
        return "finished"

    return slow_job


@pytest.mark.anyio
async def test_cancel_event_ends_run_as_cancelled() -> None:
    started, cleaned = asyncio.Event(), []
    cancel = asyncio.Event()
    agent = Agent(
        ScriptedModel([call("slow_job"), "never"]), tools=[make_slow_tool(started, cleaned)]
    )
    task = asyncio.create_task(agent.run("go", cancel=cancel))
    await started.wait()
    cancel.set()
    result = await asyncio.wait_for(task, 5)
    assert (result.status, result.stop_reason) == ("cancelled", "cancelled")
    assert cleaned == ["cleanup ran"]


@pytest.mark.anyio
async def test_cancel_before_model_call() -> None:
    cancel = asyncio.Event()
    cancel.set()
    model = ScriptedModel(["never"])
    result = await Agent(model).run("go", cancel=cancel)
    assert result.status == "cancelled" and model.requests == []


@pytest.mark.anyio
async def test_cancelling_the_task_cancels_tools() -> None:
    started, cleaned = asyncio.Event(), []
    agent = Agent(
        ScriptedModel([call("slow_job"), "never"]), tools=[make_slow_tool(started, cleaned)]
    )
    task = asyncio.create_task(agent.run("go"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cleanup ran"]


@pytest.mark.anyio
async def test_cancel_stream_consumer_sees_cancelled_result() -> None:
    started, cleaned = asyncio.Event(), []
    cancel = asyncio.Event()
    agent = Agent(ScriptedModel([call("slow_job"), "x"]), tools=[make_slow_tool(started, cleaned)])
    stream = agent.stream("go", cancel=cancel)
    statuses = []
    async for event in stream:
        if event.type == "tool_call":
            cancel.set()
        if event.type == "run_finished":
            statuses.append(event.status)
    assert statuses == ["cancelled"] and stream.result.status == "cancelled"
