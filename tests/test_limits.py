"""Budgets are checked before every model call; no call can break one."""

import asyncio

import pytest

from loopwise import Agent, Budget, ModelPrice, UsageError, tool
from loopwise.events import BudgetWarning
from loopwise.limits import BudgetTracker, Reservation, Stop
from loopwise.messages import Usage
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
    # Each call was allowed only what was left: input estimate + max_tokens stays inside.
    for request in model.requests:
        assert request.settings.max_tokens <= 4096
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
    assert Budget(max_tokens=0, max_usd=0.0, max_seconds=0, max_tool_calls=0)  # zero is a limit
