"""Teams: an agent as a tool, one budget for the tree, cancel, events with the tree."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from figures import figure
from loopwise import Agent, tool
from loopwise.agents import Pipeline, Stage, TeamBudget, agent_tool, review_loop
from loopwise.events import RunFinished, RunStarted
from loopwise.limits import Budget
from loopwise.messages import Message, ToolDefinition
from loopwise.models import ModelSettings
from loopwise.models.testing import FunctionModel, ScriptedModel, Turn, call


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key} " * 20


def busy_child(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    """A child that never stops on its own: it keeps looking things up."""
    return call("lookup", key=f"k{len(messages)}")


def test_three_children_in_parallel_stop_together_inside_the_budget() -> None:
    limit = 6_000
    children = [
        Agent(
            FunctionModel(busy_child, latency=0.005),
            tools=[lookup],
            name=f"c{i}",
            max_steps=50,
            settings=ModelSettings(max_tokens=300),
        )
        for i in range(3)
    ]
    parent = Agent(
        ScriptedModel([[call(f"c{i}", task="dig") for i in range(3)], "summary"]),
        tools=[c.as_tool() for c in children],
        budget=Budget(max_tokens=limit),
    )
    events: list[Any] = []

    async def main() -> Any:
        stream = parent.stream("go", text_deltas=False)
        async for e in stream:
            events.append(e)
        return stream.result

    result = asyncio.run(main())
    finished = {e.run_id: e for e in events if isinstance(e, RunFinished)}
    kids = [e for e in finished.values() if e.parent_run_id == result.run_id]
    assert len(kids) == 3
    assert {k.status for k in kids} == {"incomplete"} and {k.stop_reason for k in kids} == {
        "budget"
    }
    assert result.status in ("completed", "incomplete")  # the parent answers if it still fits
    total = result.usage.total_tokens
    assert total == sum(k.usage.total_tokens for k in kids) + _own_tokens(events, result.run_id)
    assert total <= limit
    steps = sorted(k.steps for k in kids)
    assert min(steps) >= 2  # they ran side by side, each several steps
    figure(
        f"team budget: 3 concurrent children, max_tokens={limit}: spent {total} "
        f"({total / limit:.0%}), child steps {steps}, all stopped 'budget'"
    )


def _own_tokens(events: list[Any], run_id: str) -> int:
    return sum(
        e.usage.total_tokens for e in events if e.type == "model_response" and e.run_id == run_id
    )


def test_child_answer_error_and_tree_in_events() -> None:
    child = Agent(ScriptedModel(["42"]), name="oracle", system="You know answers.")
    failing = Agent(ScriptedModel([]), name="broken")
    parent = Agent(
        ScriptedModel([[call("oracle", task="answer?"), call("broken", task="x")], "done"]),
        tools=[child.as_tool(), agent_tool(failing, description="Always fails.")],
    )
    events: list[Any] = []

    async def main() -> Any:
        stream = parent.stream("go", text_deltas=False)
        async for e in stream:
            events.append(e)
        return stream.result

    result = asyncio.run(main())
    assert result.status == "completed"
    observations = {
        e.name: e for e in events if e.type == "tool_result" and e.run_id == result.run_id
    }
    assert observations["oracle"].content == "42" and not observations["oracle"].is_error
    bad = observations["broken"]
    assert bad.is_error and bad.content.startswith("ERROR: agent 'broken' ended failed (error)")
    assert "ran out of turns" in bad.content and "user" not in bad.content  # no transcript
    starts = [e for e in events if isinstance(e, RunStarted)]
    assert [(s.depth, s.parent_run_id) for s in starts] == [
        (0, None),
        (1, result.run_id),
        (1, result.run_id),
    ]


def test_structured_input_and_output() -> None:
    class Query(BaseModel):
        city: str

    class Weather(BaseModel):
        city: str
        celsius: int

    def forecaster(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
        return call("final_answer", city="Oslo", celsius=3)

    child = Agent(FunctionModel(forecaster), name="weather", output_type=Weather)
    t = agent_tool(child, input_type=Query)
    assert t.parameters["properties"]["input"]["anyOf"][0] == {"$ref": "#/$defs/Query"}
    parent = Agent(
        ScriptedModel([call("weather", task="forecast", input={"city": "Oslo"}), "ok"]), tools=[t]
    )
    result = parent.run_sync("go")
    content = result.messages[-2].parts[0].content  # type: ignore[union-attr]
    assert content == '{"city":"Oslo","celsius":3}'


def test_cancelling_the_parent_cancels_the_children() -> None:
    started = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Wait."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    child = Agent(ScriptedModel([call("wait_forever"), "x"]), tools=[wait_forever], name="slow")
    parent = Agent(ScriptedModel([call("slow", task="wait"), "x"]), tools=[child.as_tool()])
    events: list[Any] = []

    async def main() -> Any:
        cancel = asyncio.Event()
        stream = parent.stream("go", cancel=cancel, text_deltas=False)

        async def stopper() -> None:
            await started.wait()
            cancel.set()

        task = asyncio.create_task(stopper())
        async for e in stream:
            events.append(e)
        await task
        return stream.result

    result = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.status == "cancelled"
    kids = [e for e in events if isinstance(e, RunFinished) and e.parent_run_id]
    assert [k.status for k in kids] == ["cancelled"]


def test_pipeline_review_loop_is_bounded_by_rounds() -> None:
    writer = Agent(FunctionModel(lambda m, t: f"draft {len(m)}"), name="writer")
    reviewer = Agent(FunctionModel(lambda m, t: "Needs work."), name="reviewer")
    research = Agent(ScriptedModel(["facts"]), name="research")
    pipeline = Pipeline(
        Stage("research", research, "Research {input}."),
        review_loop("doc", writer, reviewer, rounds=2, task="Write on {input}: {research}"),
        budget=Budget(max_tokens=100_000),
    )
    result = pipeline.run_sync("WAL")
    assert result.status == "completed"
    assert len(result.reviews) == 2  # never approved: stops after two rounds
    assert len(result.runs) == 1 + 1 + 2 * 2  # research, draft, (review, revise) x 2
    assert result.usage.total_tokens == sum(r.usage.total_tokens for r in result.runs)
    assert all(r.parent_run_id == result.run_id for r in result.runs)


def test_pipeline_stops_when_the_shared_budget_is_spent() -> None:
    chatty = Agent(FunctionModel(lambda m, t: "word " * 200), name="w")
    result = Pipeline(
        Stage("a", chatty),
        Stage("b", chatty, "{a}"),
        Stage("c", chatty, "{b}"),
        budget=Budget(max_tokens=700),
    ).run_sync("go")
    assert result.status == "incomplete" and result.stop_reason == "budget"
    assert result.usage.total_tokens <= 700


def test_team_usd_budget_is_shared() -> None:
    from loopwise.models.pricing import ModelPrice

    team = TeamBudget(Budget(max_usd=0.002))
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=1.0)  # $0.000001 per token
    agent = Agent(
        FunctionModel(lambda m, t: "word " * 30),
        price=price,
        settings=ModelSettings(max_tokens=200),
    )
    first = agent.run_sync("go", parent=team.scope)
    assert first.status == "completed"
    spent = team.cost_usd
    assert spent == first.cost_usd > 0
    runs = [agent.run_sync("go", parent=team.scope) for _ in range(20)]
    assert runs[-1].status == "incomplete" and runs[-1].stop_reason == "budget"
    assert team.cost_usd <= 0.002
