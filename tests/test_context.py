"""Context window: incremental counts, shorten old results, summarise, never split pairs."""

import asyncio

import pytest

from loopwise import (
    Agent,
    AssistantMessage,
    ContextPolicy,
    ModelSettings,
    ToolResultPart,
    UserMessage,
    tool,
)
from loopwise.context import ContextOverflow, History, estimate_tokens, fit, output_reserve
from loopwise.events import ContextCompacted
from loopwise.messages import Message, SystemMessage, TextPart, ToolCallPart
from loopwise.models.testing import FunctionModel, ScriptedModel, call


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


PROSE = "The note was saved; nothing else changed. " * 48  # about 2 KB


def test_pairs_survive_compaction_unit() -> None:
    msgs: list[Message] = [UserMessage.text("task")]
    for i in range(10):
        msgs.append(AssistantMessage(parts=(ToolCallPart(id=f"c{i}", name="note", args={}),)))
        msgs.append(
            UserMessage(parts=(ToolResultPart(call_id=f"c{i}", name="note", content=PROSE),))
        )
    h = History.of(msgs)
    done = asyncio.run(fit(h, window=2000, reserved=100, policy=ContextPolicy(), summarise=None))
    assert done
    check_pairs(h.messages)
    assert h.estimated(100) <= 2000


# -- one summary, a reserve that fits small windows, shortening per result -----------------


@tool
def read(page: int) -> str:
    """Read a page of about 2 KB."""
    return f"page {page}: " + "lorem ipsum dolor sit amet " * 75


def notes_on_task(messages: list[Message]) -> list[str]:
    """The loopwise notes on the task (the first user message)."""
    task = next(m for m in messages if isinstance(m, UserMessage))
    return [p.text for p in task.parts if isinstance(p, TextPart) and "[loopwise:" in p.text]


def run_reading(steps: int, *, window: int, summaries: bool) -> tuple[FunctionModel, object, list]:
    """A run of ``steps`` reads with a FunctionModel; returns (model, result, prompts seen by
    the summariser)."""
    state = {"i": 0}
    prompts: list[str] = []

    def brain(messages: list[Message], tools: list[object]) -> object:
        if tools == []:  # the summariser's request
            prompts.append(" ".join(p.text for p in messages[-1].parts if isinstance(p, TextPart)))
            if not summaries:
                return ""
            facts = "The pages repeat lorem ipsum; nothing else was found. " * 12
            return f"Summary {len(prompts)}: pages up to {state['i']} read. {facts}"
        state["i"] += 1
        if state["i"] > steps:
            return "All pages read."
        return ["Reading on.", call("read", page=state["i"])]

    model = FunctionModel(brain, context_window=window)  # type: ignore[arg-type]
    agent = Agent(model, tools=[read], max_steps=steps + 5, settings=ModelSettings(max_tokens=256))
    return model, agent.run_sync("Read all pages."), prompts


def test_a_long_run_keeps_one_summary_that_folds_in_the_last() -> None:
    model, result, prompts = run_reading(200, window=4000, summaries=True)
    assert result.status == "completed", result.error  # type: ignore[attr-defined]
    assert result.steps == 201  # type: ignore[attr-defined]
    assert len(prompts) >= 2
    for n in range(1, len(prompts)):  # each summary is asked to fold in the one before
        assert f"Summary {n}: pages up to" in prompts[n]
    for request in model.requests:
        notes = notes_on_task(request.messages)
        assert sum("summary of" in n for n in notes) <= 1
        assert len(notes) <= 2
        check_pairs(request.messages)
    final = notes_on_task(model.requests[-1].messages)
    assert any(f"Summary {len(prompts)}:" in n for n in final)


def test_dropped_messages_share_one_note() -> None:
    model, result, _ = run_reading(120, window=4000, summaries=False)
    assert result.status == "completed", result.error  # type: ignore[attr-defined]
    notes = notes_on_task(model.requests[-1].messages)
    assert len(notes) == 1 and "earlier messages were removed" in notes[0]
    dropped = int(notes[0].split(": ")[1].split()[0])
    kept = len(model.requests[-1].messages) - 2  # less the system prompt and the task
    assert dropped + kept >= 2 * 120  # every read's call and result: kept or counted


@pytest.mark.parametrize("window", [1024, 2048, 4000, 4100])
def test_a_small_window_answers_hi(window: int) -> None:
    model = ScriptedModel(["Hello!"], context_window=window)
    result = Agent(model).run_sync("hi")
    assert result.status == "completed", result.error
    request = model.requests[0]
    sent = History.of(request.messages).estimated()
    assert request.settings.max_tokens == output_reserve(window, 4096)
    assert sent + request.settings.max_tokens <= window


def test_output_reserve() -> None:
    assert output_reserve(200_000, 4096) == 4096
    assert output_reserve(4000, 4096) == 1000
    assert output_reserve(800, 4096) == 256
    assert output_reserve(4000, 100) == 100


def test_parallel_results_are_shortened_per_tool() -> None:
    def results(*names: str, n: int) -> list[Message]:
        calls = tuple(ToolCallPart(id=f"{x}{n}", name=x, args={}) for x in names)
        outs = tuple(
            ToolResultPart(call_id=f"{x}{n}", name=x, content=f"{x}{n} " + "r" * 3000)
            for x in names
        )
        return [AssistantMessage(parts=calls), UserMessage(parts=outs)]

    msgs = [UserMessage.text("task"), *results("a", "b", "c", n=0)]
    msgs += results("b", n=1) + results("b", n=2)
    h = History.of(msgs)
    policy = ContextPolicy(trigger=0.5, target=0.8)
    window = int((h.total + 100) / 0.8) - 2  # shortening one result is enough
    asyncio.run(fit(h, window=window, reserved=100, policy=policy, summarise=None))
    by_id = {
        p.call_id: p.content
        for m in h.messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    }
    assert "[shortened" in by_id["b0"]  # b has two newer results
    for whole in ("a0", "c0", "b1", "b2"):  # the last two of each tool stay whole
        assert "[shortened" not in by_id[whole]


def test_history_counts_with_its_counter() -> None:
    msgs = [SystemMessage(content="s" * 40), UserMessage.text("你好世界")]
    assert History.of(msgs).counts == [estimate_tokens(m) for m in msgs]
    assert estimate_tokens(msgs[1]) - 4 >= 4 * 1.5  # CJK: at least 1.5 tokens a character
    h = History.of(msgs, counter=len)
    assert h.counts == [40 + 6, 4 + 6] == [estimate_tokens(m, len) for m in msgs]
    h.use_counter(None)
    assert h.counts == [estimate_tokens(m) for m in msgs] and h.total == sum(h.counts)
    h.use_counter(lambda text: 1)
    h.append(UserMessage.text("x" * 1000))
    assert h.counts[-1] == 1 + 6 and h.total == sum(h.counts)
