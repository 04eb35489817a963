"""Whole agent runs through the real provider SDKs against local servers speaking each wire."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from loopwise import Agent, Budget, ToolResultPart, tool
from loopwise.events import ModelResponded, TextDelta, ToolResulted
from loopwise.models.anthropic import AnthropicModel
from loopwise.models.openai import OpenAIModel
from loopwise.models.pricing import pricer_for
from loopwise.models.retry import RetryPolicy
from wire_servers import Reply, ToolCall, WireServer, error_reply

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(initial_delay=0.01)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


@tool
def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: The city's name.
    """
    return json.dumps({"city": city, "temp_c": 21})


def anthropic(server: WireServer) -> AnthropicModel:
    return AnthropicModel("claude-sonnet-4-6", api_key="test-key", base_url=server.url, retry=FAST)


def openai(server: WireServer) -> OpenAIModel:
    return OpenAIModel("gpt-4.1", api_key="test-key", base_url=server.openai_url, retry=FAST)


@pytest.mark.parametrize("make", [anthropic, openai])
async def test_streamed_tool_call_run(server: WireServer, make: object) -> None:
    server.push(
        Reply(
            text="Let me check the weather.",
            tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),),
        ),
        Reply(text="It is 21 °C in Oslo.", input_tokens=200, output_tokens=12),
    )
    agent = Agent(make(server), tools=[get_weather])  # type: ignore[operator]
    stream = agent.stream("Weather in Oslo?")
    events = [e async for e in stream]
    result = stream.result
    assert result.status == "completed" and result.output == "It is 21 °C in Oslo."
    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Let me check the weather." in deltas
    observed = next(e for e in events if isinstance(e, ToolResulted))
    assert json.loads(observed.content) == {"city": "Oslo", "temp_c": 21}
    # The tool's result went back on the wire, bound to the call id the server made.
    second = json.dumps(server.bodies[1])
    assert '\\"temp_c\\": 21' in second or '"temp_c": 21' in second
    assert all(body.get("stream") for body in server.bodies)
    responded = [e for e in events if isinstance(e, ModelResponded)]
    assert responded[-1].total_usage.input_tokens == 210
    assert result.cost_usd > 0


async def test_cache_tokens_are_priced(server: WireServer) -> None:
    server.push(
        Reply(
            text="ok",
            input_tokens=100,
            output_tokens=10,
            cache_read_tokens=1000,
            cache_write_tokens=500,
        )
    )
    result = await Agent(anthropic(server)).run("hi")
    usage = result.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        1600,
        1000,
        500,
    )
    pricer = pricer_for("anthropic", "claude-sonnet-4-6")
    assert pricer is not None
    assert result.cost_usd == pytest.approx(pricer.cost(usage))
    # $3/MTok uncached, $0.30 cache read, $3.75 cache write, $15 output.
    expected = (100 * 3 + 1000 * 0.3 + 500 * 3.75 + 10 * 15) / 1e6
    assert result.cost_usd == pytest.approx(expected)
    body = server.bodies[0]
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize("make", [anthropic, openai])
async def test_transient_errors_are_retried_within_a_run(server: WireServer, make: object) -> None:
    server.push(
        error_reply(429, "slow down", {"retry-after": "0.05"}),
        error_reply(503, "busy"),
        Reply(text="fine"),
    )
    result = await Agent(make(server)).run("hi")  # type: ignore[operator]
    assert result.output == "fine" and len(server.requests) == 3


@pytest.mark.parametrize("make", [anthropic, openai])
async def test_bad_request_fails_the_run_clearly(server: WireServer, make: object) -> None:
    server.push(error_reply(400, "messages: invalid role"))
    result = await Agent(make(server)).run("hi")  # type: ignore[operator]
    assert (result.status, result.stop_reason) == ("failed", "error")
    assert result.error is not None and "HTTP 400" in result.error
    assert "messages: invalid role" in result.error
    assert len(server.requests) == 1


async def test_budget_lowers_max_tokens_on_the_wire(server: WireServer) -> None:
    server.push(
        Reply(
            tool_calls=(ToolCall("get_weather", {"city": "Rome"}),),
            input_tokens=500,
            output_tokens=50,
        ),
        Reply(text="done"),
    )
    agent = Agent(anthropic(server), tools=[get_weather], budget=Budget(max_tokens=2000))
    result = await agent.run("Weather in Rome?")
    assert result.status == "completed"
    assert all(body["max_tokens"] < 2000 for body in server.bodies)
    assert server.bodies[1]["max_tokens"] < server.bodies[0]["max_tokens"]


async def test_invalid_streamed_arguments_are_corrected(server: WireServer) -> None:
    server.push(
        Reply(tool_calls=(ToolCall("get_weather", '{"city": "Par'),)),
        Reply(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
        Reply(text="Paris is 21 °C."),
    )
    stream = Agent(openai(server), tools=[get_weather]).stream("Paris?")
    events = [e async for e in stream]
    assert stream.result.output == "Paris is 21 °C."
    first = next(e for e in events if isinstance(e, ToolResulted))
    assert first.is_error and "not a valid JSON object" in first.content
    tool_messages = [m for m in server.bodies[1]["messages"] if m["role"] == "tool"]
    assert "not a valid JSON object" in tool_messages[0]["content"]
    assert isinstance(stream.result.messages[-2].parts[0], ToolResultPart)  # type: ignore[union-attr]
