"""Loop detection: nudge first, then stop well before max_steps."""

import asyncio

from loopwise import Agent, LoopPolicy, TextPart, UserMessage, tool
from loopwise.events import LoopDetected
from loopwise.messages import ToolCallPart, ToolResultPart
from loopwise.models.testing import ScriptedModel, call
from loopwise.repetition import LoopDetector


@tool
def search(query: str) -> str:
    """Search."""
    return f"results for {query}"


@tool
def fail(x: int) -> str:
    """Always fails."""
    raise RuntimeError("service unavailable")


def run_events(agent: Agent, task: str = "go") -> tuple[list[object], object]:
    async def collect() -> tuple[list[object], object]:
        stream = agent.stream(task)
        events = [e async for e in stream]
        return events, stream.result

    return asyncio.run(collect())


def test_repeated_call_nudges_then_stops() -> None:
    model = ScriptedModel([call("search", query="cats")] * 30)
    events, result = run_events(Agent(model, tools=[search], max_steps=25))
    loops = [e for e in events if isinstance(e, LoopDetected)]
    assert [(e.kind, e.action) for e in loops] == [
        ("repeated_call", "nudge"),
        ("repeated_call", "stop"),
    ]
    assert (result.status, result.stop_reason) == ("incomplete", "loop")  # type: ignore[attr-defined]
    assert result.steps <= 6  # type: ignore[attr-defined]
    nudged = model.requests[3].messages[-1]
    assert isinstance(nudged, UserMessage)
    assert any(isinstance(p, TextPart) and "repeating yourself" in p.text for p in nudged.parts)


def test_nudge_lets_a_model_recover() -> None:
    turns = [call("search", query="cats")] * 3 + ["Cats are results for cats."]
    result = Agent(ScriptedModel(turns), tools=[search]).run_sync("go")
    assert result.status == "completed"


def test_alternation_is_detected() -> None:
    turns = [call("search", query="a"), call("search", query="b")] * 10
    events, result = run_events(Agent(ScriptedModel(turns), tools=[search]))
    kinds = [e.kind for e in events if isinstance(e, LoopDetected)]
    assert kinds[0] == "alternation"
    assert result.stop_reason == "loop"  # type: ignore[attr-defined]
    assert result.steps < 12  # type: ignore[attr-defined]


def test_same_error_with_different_arguments() -> None:
    turns = [call("fail", x=i) for i in range(20)]
    events, result = run_events(Agent(ScriptedModel(turns), tools=[fail]))
    kinds = [e.kind for e in events if isinstance(e, LoopDetected)]
    assert kinds == ["repeated_error", "repeated_error"]
    assert result.stop_reason == "loop"  # type: ignore[attr-defined]


def test_varied_calls_are_not_a_loop() -> None:
    turns = [call("search", query=f"q{i}") for i in range(10)] + ["done"]
    events, result = run_events(Agent(ScriptedModel(turns), tools=[search]))
    assert not [e for e in events if isinstance(e, LoopDetected)]
    assert result.status == "completed"  # type: ignore[attr-defined]


def test_detection_can_be_disabled() -> None:
    model = ScriptedModel([call("search", query="x")] * 5)
    agent = Agent(model, tools=[search], max_steps=5, loop_policy=LoopPolicy(enabled=False))
    assert agent.run_sync("go").stop_reason == "max_steps"


def test_detector_unit() -> None:
    d = LoopDetector()
    c = ToolCallPart(id="1", name="t", args={"a": 1})
    r = ToolResultPart(call_id="1", name="t", content="ok")
    assert d.observe([c], [r]) is None
    assert d.observe([c], [r]) is None
    found = d.observe([c], [r])
    assert found is not None and not found.stop
