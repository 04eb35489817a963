"""Context window: incremental counts, shorten old results, summarise, never split pairs."""

import asyncio

import pytest

from loopwise import Agent, AssistantMessage, ContextPolicy, ToolResultPart, UserMessage, tool
from loopwise.context import ContextOverflow, History, estimate_tokens, fit
from loopwise.events import ContextCompacted
from loopwise.messages import Message, SystemMessage, TextPart, ToolCallPart
from loopwise.models.testing import FunctionModel, call


@tool
def fetch(page: int) -> str:
    """Fetch a long page."""
    return f"page {page}: " + "lorem ipsum " * 400


@tool
def note(text: str) -> str:
    """Write a short note."""
    return "noted"


def check_pairs(messages: list[Message]) -> None:
    """Every tool call has its result in the next message, and every result its call."""
    for i, m in enumerate(messages):
        if isinstance(m, AssistantMessage) and m.tool_calls:
            nxt = messages[i + 1]
            assert isinstance(nxt, UserMessage)
            ids = {p.call_id for p in nxt.parts if isinstance(p, ToolResultPart)}
            assert {c.id for c in m.tool_calls} <= ids
        if isinstance(m, UserMessage) and any(isinstance(p, ToolResultPart) for p in m.parts):
            assert isinstance(messages[i - 1], AssistantMessage)


def test_history_counts_are_incremental() -> None:
    h = History()
    msgs = [SystemMessage(content="s" * 40), UserMessage.text("u" * 400)]
    for m in msgs:
        h.append(m)
    assert h.counts == [estimate_tokens(m) for m in msgs]
    assert h.total == sum(h.counts)
    h.replace(1, UserMessage.text("short"))
    assert h.total == sum(h.counts) == sum(estimate_tokens(m) for m in h.messages)


def long_run(
    window: int, steps: int, summary: str | None = "Pages 0-n fetched."
) -> tuple[FunctionModel, list[object], object]:
    counter = {"i": 0}
    sizes: list[int] = []

    def brain(messages: list[Message], tools: list[object]) -> object:
        sizes.append(History.of(messages).estimated())
        if tools == []:  # the summariser's request has no tools
            return summary or ""
        counter["i"] += 1
        if counter["i"] > steps:
            return "All pages read."
        return ["Reading the next page.", call("fetch", page=counter["i"])]

    model = FunctionModel(brain)  # type: ignore[arg-type]
    agent = Agent(
        model,
        tools=[fetch],
        context_window=window,
        max_steps=steps + 5,
        settings=__import__("loopwise").ModelSettings(max_tokens=256),
    )

    async def collect() -> tuple[list[object], object]:
        stream = agent.stream("Read all pages.", text_deltas=False)
        events = [e async for e in stream]
        return events, stream.result

    events, result = asyncio.run(collect())
    model.sizes = sizes  # type: ignore[attr-defined]
    return model, events, result


def test_old_tool_results_are_shortened_first() -> None:
    model, events, result = long_run(window=8000, steps=8)
    assert result.status == "completed"  # type: ignore[attr-defined]
    compactions = [e for e in events if isinstance(e, ContextCompacted)]
    assert compactions and compactions[0].strategy == "shorten_tool_results"
    last = model.requests[-1].messages
    results = [
        p
        for m in last
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    assert "[shortened to save context" in results[0].content
    assert all("[shortened" not in r.content for r in results[-2:])  # last two kept whole
    for request in model.requests:
        check_pairs(request.messages)


def test_summary_when_shortening_is_not_enough() -> None:
    model, events, result = long_run(window=3000, steps=12)
    assert result.status == "completed"  # type: ignore[attr-defined]
    strategies = {e.strategy for e in events if isinstance(e, ContextCompacted)}
    assert "summarise" in strategies
    final = model.requests[-1].messages
    task = final[1]
    assert isinstance(task, UserMessage)
    assert any(
        "summary of" in p.text and "Pages 0-n fetched." in p.text
        for p in task.parts
        if isinstance(p, TextPart)
    )
    for request in model.requests:
        check_pairs(request.messages)
        est = History.of(request.messages).estimated() + 256
        tools = 0 if not request.tools else 60
        assert est + tools <= 3000


def test_drop_when_no_summary_is_possible() -> None:
    _model, events, result = long_run(window=3000, steps=12, summary=None)
    strategies = {e.strategy for e in events if isinstance(e, ContextCompacted)}
    assert "drop_oldest" in strategies
    assert result.status == "completed"  # type: ignore[attr-defined]


def test_overflow_is_a_clear_failure() -> None:
    h = History.of([UserMessage.text("x" * 40_000)])
    with pytest.raises(ContextOverflow, match="context window of 1000"):
        asyncio.run(fit(h, window=1000, reserved=100, policy=ContextPolicy(), summarise=None))


def test_pairs_survive_compaction_unit() -> None:
    msgs: list[Message] = [UserMessage.text("task")]
    for i in range(10):
        msgs.append(AssistantMessage(parts=(ToolCallPart(id=f"c{i}", name="note", args={}),)))
        msgs.append(
            UserMessage(parts=(ToolResultPart(call_id=f"c{i}", name="note", content="r" * 2000),))
        )
    h = History.of(msgs)
    done = asyncio.run(fit(h, window=2000, reserved=100, policy=ContextPolicy(), summarise=None))
    assert done
    check_pairs(h.messages)
    assert h.estimated(100) <= 2000
