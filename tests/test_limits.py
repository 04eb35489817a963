"""Budgets are checked before every model call; no call can break one."""

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from loopwise import Agent, Budget, ModelPrice, UsageError, tool
from loopwise.events import BudgetWarning
from loopwise.limits import BudgetTracker, Reservation, Stop
from loopwise.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    Usage,
)
from loopwise.models.testing import ScriptedModel, call


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


def looping_model(n: int = 50) -> ScriptedModel:
    return ScriptedModel([call("echo", text=f"step {i}") for i in range(n)])


def test_max_steps_stops_incomplete() -> None:
    result = Agent(looping_model(), tools=[echo], max_steps=4).run_sync("go")
    assert (result.status, result.stop_reason, result.steps) == ("incomplete", "max_steps", 4)
    assert result.detail and "max_steps=4" in result.detail


def test_token_budget_is_never_exceeded() -> None:
    model = looping_model()
    budget = Budget(max_tokens=3000, min_output_tokens=16)
    result = Agent(model, tools=[echo], budget=budget).run_sync("go")
    assert (result.status, result.stop_reason) == ("incomplete", "budget")
    assert result.usage.total_tokens <= 3000
    # Each call was allowed only what was left: what was spent, its input and its
    # max_tokens together stay inside the budget (the last calls got less than 4096).
    answers = [m for m in result.messages if isinstance(m, AssistantMessage)]
    assert len(answers) == len(model.requests) >= 2
    spent = 0
    for request, answer in zip(model.requests, answers, strict=True):
        assert spent + answer.usage.input_tokens + request.settings.max_tokens <= 3000
        spent += answer.usage.total_tokens
    assert model.requests[-1].settings.max_tokens < 4096


def test_usd_budget_with_price_override() -> None:
    price = ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0)
    budget = Budget(max_usd=0.02)
    model = looping_model()
    result = Agent(model, tools=[echo], budget=budget, price=price).run_sync("go")
    assert (result.status, result.stop_reason) == ("incomplete", "budget")
    assert 0 < result.cost_usd <= 0.02
    assert result.cost_usd == pytest.approx(price.cost(result.usage))


def test_usd_budget_needs_a_known_price() -> None:
    class Priced(ScriptedModel):
        @property
        def provider(self) -> str:
            return "anthropic"

        @property
        def model_name(self) -> str:
            return "no-such-model-xyz"

    with pytest.raises(UsageError, match="No price is known"):
        Agent(Priced(["x"]), budget=Budget(max_usd=1)).run_sync("go")


def test_table_price_from_genai_prices() -> None:
    from loopwise.models.pricing import pricer_for

    pricer = pricer_for("anthropic", "claude-sonnet-4-6")
    assert pricer is not None
    cost = pricer.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000))
    assert cost == pytest.approx(18.0)
    assert pricer_for("ollama", "qwen3:8b") is not None


def test_max_tool_calls() -> None:
    model = ScriptedModel([[call("echo", text="a"), call("echo", text="b")]] * 5)
    result = Agent(model, tools=[echo], budget=Budget(max_tool_calls=3)).run_sync("go")
    assert (result.status, result.stop_reason) == ("incomplete", "budget")
    assert result.tool_calls == 2
    assert result.detail and "max_tool_calls=3" in result.detail


def test_max_seconds_stops_a_slow_run() -> None:
    @tool
    async def slow() -> str:
        """Take a long time."""
        await asyncio.sleep(10)
        return "late"

    model = ScriptedModel([call("slow"), "done"])
    result = Agent(model, tools=[slow], budget=Budget(max_seconds=0.3)).run_sync("go")
    assert (result.status, result.stop_reason) == ("incomplete", "timeout")
    assert result.duration < 2


def test_budget_warning_event() -> None:
    agent = Agent(looping_model(), tools=[echo], max_steps=5)

    async def collect() -> list[object]:
        return [e async for e in agent.stream("go")]

    warnings = [e for e in asyncio.run(collect()) if isinstance(e, BudgetWarning)]
    assert [(w.limit, w.used, w.maximum) for w in warnings] == [("max_steps", 4, 5)]


def test_tracker_reserves_output_within_every_budget() -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=10.0)
    t = BudgetTracker(budget=Budget(max_usd=0.011), max_steps=10, pricer=price)
    # 1000 input tokens cost $0.001, leaving $0.01 = 1000 output tokens.
    reserved = t.check_model_call(1000, 4096)
    assert isinstance(reserved, Reservation) and 990 <= reserved.max_tokens <= 1000
    worst = price.cost(Usage(input_tokens=1000, output_tokens=reserved.max_tokens))
    assert worst <= 0.011
    t.record(Usage(input_tokens=1000, output_tokens=1000))
    assert isinstance(t.check_model_call(1000, 4096), Stop)
    t2 = BudgetTracker(budget=Budget(max_tokens=5000), max_steps=10, pricer=None)
    assert t2.check_model_call(4000, 4096) == Reservation(max_tokens=1000)
    assert t2.check_model_call(4990, 4096).reason == "budget"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        {"max_tokens": -1},
        {"max_usd": -0.5},
        {"max_usd": float("nan")},
        {"max_seconds": -3},
        {"max_tool_calls": -1},
        {"warn_at": 0},
        {"warn_at": 1.5},
        {"min_output_tokens": 0},
    ],
)
def test_a_budget_with_an_impossible_limit_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError, match="Budget "):
        Budget(**bad)  # type: ignore[arg-type]


def test_a_zero_budget_is_a_limit_that_allows_no_call() -> None:
    zero = Budget(max_tokens=0, max_usd=0.0, max_seconds=0, max_tool_calls=0)
    assert (zero.max_tokens, zero.max_usd, zero.max_seconds, zero.max_tool_calls) == (0, 0, 0, 0)
    model = ScriptedModel(["never sent"])
    result = Agent(model, budget=Budget(max_tokens=0)).run_sync("go")
    assert (result.status, result.stop_reason, model.requests) == ("incomplete", "budget", [])
    assert result.usage.total_tokens == 0


# -- a budget against a model that counts its own tokens ----------------------------------

CHINESE = (
    "今天早上我们在会议室讨论了新图书馆的计划。大家都认为预算必须在年底之前确定，"  # noqa: RUF001
    "而且施工应该在冬天到来之前完成。有几位居民问阅览室晚上是否会继续开放；"  # noqa: RUF001
    "建筑师解释说照明系统已经考虑到了这一点。下午我们又检查了服务器的日志，"  # noqa: RUF001
    "发现有一些请求失败了，原因是数据库连接超时。"  # noqa: RUF001
)


@tool
def read_page(page: int) -> str:
    """Read a page of the Chinese report."""
    return CHINESE * 7


def tokenizer() -> tuple[str, Callable[[str], int]]:
    """SmolLM2's own tokenizer, else a pessimistic stand-in: one token per UTF-8 byte."""
    from importlib.util import find_spec

    from loopwise.models.local import default_weights

    path = default_weights()
    if find_spec("llama_cpp") is None or path is None:
        return "utf-8 bytes", lambda text: len(text.encode())
    from llama_cpp import Llama

    vocab: Any = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return "gguf", lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))


class CountingModel(ScriptedModel):
    """Reports usage as a server would: its own tokenizer over the rendered ChatML prompt,
    independent of loopwise's estimate."""

    def __init__(self, turns: list[Any], count: Callable[[str], int]) -> None:
        super().__init__(turns)
        self.count = count

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: Any
    ) -> AssistantMessage:
        answer = await super().request(messages, tools, settings)
        prompt = _chatml(messages, tools) + "<|im_start|>assistant\n"
        reply = _chatml([answer], [])
        usage = Usage(requests=1, input_tokens=self.count(prompt), output_tokens=self.count(reply))
        return replace(answer, usage=usage)


def _chatml(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
    schemas = [
        {"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools
    ]
    out = f"<|im_start|>system\nTools: {json.dumps(schemas)}<|im_end|>\n" if tools else ""
    for m in messages:
        if isinstance(m, SystemMessage):
            out += f"<|im_start|>system\n{m.content}<|im_end|>\n"
        else:
            body = "\n".join(_part_text(p) for p in m.parts)
            out += f"<|im_start|>{m.role}\n{body}<|im_end|>\n"
    return out


def _part_text(part: object) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ToolResultPart):
        return part.content
    if isinstance(part, ToolCallPart):
        return json.dumps({"name": part.name, "arguments": part.args}, ensure_ascii=False)
    return ""


def test_a_token_budget_holds_against_the_models_own_count_of_chinese() -> None:
    kind, count = tokenizer()
    model = CountingModel([call("read_page", page=i) for i in range(20)], count)
    result = Agent(model, tools=[read_page], budget=Budget(max_tokens=1500)).run_sync("读报告")
    assert (result.status, result.stop_reason) == ("incomplete", "budget"), kind
    spent = sum(m.usage.total_tokens for m in result.messages if isinstance(m, AssistantMessage))
    assert spent == result.usage.total_tokens
    assert result.usage.total_tokens <= 1500, (kind, result.usage, len(model.requests))
