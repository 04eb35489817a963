"""The ReAct loop: thoughts, observations, self-correction, parallel calls, events."""

import asyncio
import json
import time

import pytest

from loopwise import DEFAULT_SYSTEM_PROMPT, Agent, SystemMessage, ToolResultPart, tool
from loopwise.events import (
    ModelText,
    RunFinished,
    RunStarted,
    ToolCalled,
    ToolResulted,
    parse_event,
)
from loopwise.models.testing import FunctionModel, ScriptedModel, call, raw_call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def results_of(model: ScriptedModel, request: int) -> list[ToolResultPart]:
    last = model.requests[request].messages[-1]
    return [p for p in last.parts if isinstance(p, ToolResultPart)]  # type: ignore[union-attr]


def test_thought_observation_answer() -> None:
    model = ScriptedModel([["I will add the numbers.", call("add", a=2, b=3)], "It is 5."])
    agent = Agent(model, tools=[add])

    async def collect() -> list[object]:
        stream = agent.stream("What is 2 + 3?")
        return [e async for e in stream]

    events = asyncio.run(collect())
    thoughts = [e for e in events if isinstance(e, ModelText)]
    assert [(t.text, t.final) for t in thoughts] == [
        ("I will add the numbers.", False),
        ("It is 5.", True),
    ]
    assert results_of(model, 1)[0].content == "5"
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert events[-1].status == "completed" and events[-1].output == "It is 5."


def test_default_system_prompt_and_tools_reach_the_model() -> None:
    model = ScriptedModel(["done"])
    Agent(model, tools=[add]).run_sync("hi")
    request = model.requests[0]
    assert request.messages[0] == SystemMessage(content=DEFAULT_SYSTEM_PROMPT)
    assert [t.name for t in request.tools] == ["add"]
    model = ScriptedModel(["done"])
    Agent(model, system="Be brief.").run_sync("hi")
    assert model.requests[0].messages[0] == SystemMessage(content="Be brief.")


@pytest.mark.parametrize(
    ("bad_call", "expected"),
    [
        (call("add", a=1, b="two"), ["'b'", "valid integer", '"two"']),
        (call("add", a=1), ["'b'", "Field required"]),
        (call("add", a=1, b=2, c=3), ["'c'", "unknown field"]),
        (call("multiply", a=1, b=2), ["no tool named 'multiply'", "Available tools: add"]),
        (raw_call("add", '{"a": 1, "b": '), ["not a valid JSON object", '{"a": 1, "b": ']),
    ],
)
def test_bad_calls_become_observations_and_the_model_recovers(
    bad_call: object, expected: list[str]
) -> None:
    model = ScriptedModel([bad_call, call("add", a=1, b=2), "3"])  # type: ignore[list-item]
    result = Agent(model, tools=[add]).run_sync("1 + 2?")
    assert result.status == "completed" and result.output == "3"
    first = results_of(model, 1)[0]
    assert first.is_error
    for text in expected:
        assert text in first.content
    assert results_of(model, 2)[0].content == "3"


def test_tool_exception_becomes_error_observation() -> None:
    @tool
    def read(path: str) -> str:
        """Read a file."""
        raise FileNotFoundError(f"no such file: {path}")

    model = ScriptedModel([call("read", path="/x"), "The file does not exist."])
    result = Agent(model, tools=[read]).run_sync("read /x")
    assert result.status == "completed"
    assert results_of(model, 1)[0].content.startswith("ERROR: FileNotFoundError: no such file: /x.")


def test_empty_tool_result_says_so() -> None:
    @tool
    def nothing() -> None:
        """Do nothing."""

    model = ScriptedModel([call("nothing"), "ok"])
    Agent(model, tools=[nothing]).run_sync("go")
    assert results_of(model, 1)[0].content == "(the tool returned no output)"


def test_parallel_calls_run_concurrently_in_order() -> None:
    @tool
    async def nap(label: str) -> str:
        """Sleep half a second."""
        await asyncio.sleep(0.5)
        return label

    @tool
    def blocking_nap(label: str) -> str:
        """Sleep half a second in a thread."""
        time.sleep(0.5)
        return label

    model = ScriptedModel(
        [[call("nap", label="a"), call("blocking_nap", label="b"), call("nap", label="c")], "ok"]
    )
    started = time.perf_counter()
    result = Agent(model, tools=[nap, blocking_nap]).run_sync("nap")
    elapsed = time.perf_counter() - started
    assert result.status == "completed"
    assert [r.content for r in results_of(model, 1)] == ["a", "b", "c"]
    assert elapsed < 0.9, f"three 0.5 s calls took {elapsed:.2f} s: not concurrent"


def test_scripted_model_running_out_fails_clearly() -> None:
    model = ScriptedModel([call("add", a=1, b=2)])
    result = Agent(model, tools=[add]).run_sync("go")
    assert result.status == "failed"
    assert result.stop_reason == "error"
    assert result.error is not None and "ran out of turns" in result.error


def test_events_are_json_and_carry_run_step_time() -> None:
    model = ScriptedModel([["thinking", call("add", a=1, b=1)], "2"])
    agent = Agent(model, tools=[add])

    async def collect() -> list[object]:
        return [e async for e in agent.stream("1+1", run_id="run_fixed")]

    events = asyncio.run(collect())
    kinds = [type(e).__name__ for e in events]
    for needed in (
        "RunStarted",
        "ModelRequested",
        "ModelText",
        "ToolCalled",
        "ToolResulted",
        "ModelResponded",
        "RunFinished",
    ):
        assert needed in kinds
    for e in events:
        data = json.loads(e.to_json())  # type: ignore[attr-defined]
        assert data["run_id"] == "run_fixed"
        assert isinstance(data["step"], int) and data["time"] > 0
        assert parse_event(data) == e
    call_ev = next(e for e in events if isinstance(e, ToolCalled))
    res_ev = next(e for e in events if isinstance(e, ToolResulted))
    assert (call_ev.step, call_ev.args, res_ev.content) == (1, {"a": 1, "b": 1}, "2")


def test_function_model_sees_observations() -> None:
    def brain(messages: list[object], tools: list[object]) -> object:
        last = messages[-1]
        results = [p for p in last.parts if isinstance(p, ToolResultPart)]  # type: ignore[attr-defined]
        if not results:
            return call("add", a=20, b=22)
        return f"The answer is {results[0].content}."

    result = Agent(FunctionModel(brain), tools=[add]).run_sync("20 + 22?")  # type: ignore[arg-type]
    assert result.output == "The answer is 42."
    assert result.steps == 2 and result.tool_calls == 1


def test_messages_continue_a_conversation() -> None:
    model = ScriptedModel(["first", "second"])
    agent = Agent(model)
    first = agent.run_sync("one")
    second = agent.run_sync("two", messages=first.messages)
    assert second.output == "second"
    texts = [m.role for m in model.requests[1].messages]
    assert texts == ["system", "user", "assistant", "user"]


def test_run_sync_inside_a_loop_is_a_clear_error() -> None:
    from loopwise import UsageError

    async def inner() -> None:
        Agent(ScriptedModel(["x"])).run_sync("hi")

    with pytest.raises(UsageError, match="await run"):
        asyncio.run(inner())


def test_unexpected_model_exception_fails_the_run_and_keeps_steps() -> None:
    def brain(messages: list[object], tools: list[object]) -> object:
        if len(messages) > 2:
            raise KeyError("path")
        return call("add", a=1, b=2)

    result = Agent(FunctionModel(brain), tools=[add]).run_sync("go")  # type: ignore[arg-type]
    assert (result.status, result.stop_reason) == ("failed", "error")
    assert result.error == "KeyError: 'path'"
    assert result.steps == 1 and len(result.messages) == 4  # the finished step is kept


def test_repeated_call_ids_in_one_turn_are_made_unique() -> None:
    from loopwise.models.testing import ScriptedCall

    model = ScriptedModel(
        [
            [
                ScriptedCall("add", {"a": 1, "b": 1}, id="call_0"),
                ScriptedCall("add", {"a": 2, "b": 2}, id="call_0"),
            ],
            "ok",
        ]
    )
    result = Agent(model, tools=[add]).run_sync("go")
    assert result.status == "completed"
    results = results_of(model, 1)
    assert [r.content for r in results] == ["2", "4"]
    assert len({r.call_id for r in results}) == 2
