"""AnthropicModel against a real HTTP server speaking the Messages API, through the real SDK."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loopwise.errors import ModelError, UsageError
from loopwise.messages import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    Usage,
    UserMessage,
)
from loopwise.models import ModelSettings, StreamingModel, infer_model
from loopwise.models.anthropic import AnthropicModel
from loopwise.models.retry import RetryPolicy
from wire_servers import Reply, ToolCall, WireServer, error_reply

pytestmark = pytest.mark.anyio

PNG_1PX = (  # a real 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
FAST = RetryPolicy(initial_delay=0.01)
SETTINGS = ModelSettings(max_tokens=256)
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
ADD = ToolDefinition(
    name="add",
    description="Add two numbers.",
    parameters={"type": "object", "properties": {"a": {"type": "number"}}},
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def make_model(server: WireServer, retry: RetryPolicy = FAST) -> AnthropicModel:
    return AnthropicModel("claude-test", api_key="test-key", base_url=server.url, retry=retry)


async def collect(
    model: AnthropicModel,
    messages: list[Message],
    tools: list[ToolDefinition] | None = None,
) -> tuple[list[str], AssistantMessage]:
    deltas: list[str] = []
    final: list[AssistantMessage] = []
    async for item in model.stream(messages, tools or [], SETTINGS):
        if isinstance(item, str):
            assert not final, "a text delta came after the final message"
            deltas.append(item)
        else:
            final.append(item)
    assert len(final) == 1
    return deltas, final[0]


HELLO: list[Message] = [UserMessage.text("hello")]


# -- request mapping ------------------------------------------------------------------------


async def test_request_maps_system_tools_results_and_merges_turns(server: WireServer) -> None:
    server.push(Reply(text="done"))
    messages: list[Message] = [
        SystemMessage(content="You are terse."),
        UserMessage.text("What is the weather in Paris?"),
        AssistantMessage(
            parts=(
                TextPart(text="Let me look."),
                ToolCallPart(id="toolu_1", name="get_weather", args={"city": "Paris"}),
            )
        ),
        UserMessage(
            parts=(ToolResultPart(call_id="toolu_1", name="get_weather", content="sunny"),)
        ),
        UserMessage(parts=(TextPart(text="Note: 3 steps left."), TextPart(text=""))),
    ]
    result = await make_model(server).request(messages, [WEATHER, ADD], SETTINGS)

    assert result.text == "done"
    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == "Bearer test-key"  # SDK 2.x: not x-api-key
    body = sent.body
    assert body["model"] == "claude-test"
    assert body["max_tokens"] == 256
    assert body["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER.parameters,
        },
        {
            "name": "add",
            "description": "Add two numbers.",
            "input_schema": ADD.parameters,
            "cache_control": {"type": "ephemeral"},
        },
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "sunny",
                    "is_error": False,
                },
                {"type": "text", "text": "Note: 3 steps left."},
            ],
        },
    ]
    assert "temperature" not in body
    assert "stop_sequences" not in body
    assert "stream" not in body


async def test_tool_results_go_first_when_a_note_precedes_them(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    messages: list[Message] = [
        UserMessage.text("go"),
        AssistantMessage(parts=(ToolCallPart(id="t1", name="add", args={"a": 1}),)),
        UserMessage.text("a note from the loop"),
        UserMessage(parts=(ToolResultPart(call_id="t1", name="add", content="1", is_error=True),)),
    ]
    await make_model(server).request(messages, [ADD], SETTINGS)
    last = server.requests[0].body["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]
    assert last["content"][0]["is_error"] is True


async def test_images_and_documents_become_base64_blocks(server: WireServer) -> None:
    server.push(Reply(text="seen"))
    user = UserMessage(
        parts=(
            TextPart(text="Look:"),
            ImagePart(media_type="image/png", data=PNG_1PX),
            DocumentPart(media_type="application/pdf", data="JVBERi0xLjQ=", text="ignored"),
        )
    )
    await make_model(server).request([user], [], SETTINGS)
    content = server.requests[0].body["messages"][0]["content"]
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX},
    }
    assert content[2] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="},
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
async def test_settings_reach_the_wire(server: WireServer, choice: str, wire: Any) -> None:
    server.push(Reply(text="ok"))
    settings = ModelSettings(
        max_tokens=99, temperature=0.2, stop_sequences=("END",), timeout=30, tool_choice=choice
    )
    await make_model(server).request(HELLO, [WEATHER], settings)
    body = server.requests[0].body
    assert body["tool_choice"] == wire
    assert body["temperature"] == 0.2
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 99


async def test_large_max_tokens_is_not_refused_without_streaming(server: WireServer) -> None:
    """The SDK refuses max_tokens above ~21k on a non-streaming call unless given a timeout."""
    server.push(Reply(text="ok"))
    result = await make_model(server).request(HELLO, [], ModelSettings(max_tokens=64_000))
    assert result.text == "ok"
    assert server.requests[0].body["max_tokens"] == 64_000


async def test_no_tools_means_no_tools_or_tool_choice(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    await make_model(server).request([SystemMessage(content=""), *HELLO], [], SETTINGS)
    body = server.requests[0].body
    assert "tools" not in body
    assert "tool_choice" not in body
    assert "system" not in body


async def test_unknown_tool_choice_is_a_usage_error(server: WireServer) -> None:
    with pytest.raises(UsageError, match="tool_choice 'sometimes'"):
        await make_model(server).request(HELLO, [WEATHER], ModelSettings(tool_choice="sometimes"))
    assert server.requests == []


# -- response mapping -----------------------------------------------------------------------


async def test_response_text_and_usage_with_cache_tokens(server: WireServer) -> None:
    server.push(
        Reply(
            text="Hi there.",
            input_tokens=100,
            output_tokens=20,
            cache_read_tokens=300,
            cache_write_tokens=50,
        )
    )
    model = make_model(server)
    assert isinstance(model, StreamingModel)
    result = await model.request(HELLO, [], SETTINGS)
    assert result.parts == (TextPart(text="Hi there."),)
    assert result.usage == Usage(
        requests=1,
        input_tokens=450,
        output_tokens=20,
        cache_read_tokens=300,
        cache_write_tokens=50,
    )
    assert result.finish_reason == "stop"
    assert result.model_name == "claude-test"


async def test_response_tool_calls(server: WireServer) -> None:
    server.push(
        Reply(
            text="Checking.",
            tool_calls=(
                ToolCall("get_weather", {"city": "Oslo"}, id="toolu_a"),
                ToolCall("add", {"a": 2}, id="toolu_b"),
            ),
        )
    )
    result = await make_model(server).request(HELLO, [WEATHER, ADD], SETTINGS)
    assert result.parts == (
        TextPart(text="Checking."),
        ToolCallPart(id="toolu_a", name="get_weather", args={"city": "Oslo"}),
        ToolCallPart(id="toolu_b", name="add", args={"a": 2}),
    )
    assert result.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "max_tokens"),
        ("refusal", "refusal"),
    ],
)
async def test_finish_reasons(server: WireServer, wire: str, ours: str) -> None:
    server.push(Reply(text="x", stop_reason=wire), Reply(text="x", stop_reason=wire))
    model = make_model(server)
    assert (await model.request(HELLO, [], SETTINGS)).finish_reason == ours
    assert (await collect(model, HELLO))[1].finish_reason == ours


def test_context_window_and_names() -> None:
    model = AnthropicModel("claude-sonnet-4-6", api_key="k", base_url="http://127.0.0.1:9")
    assert (model.provider, model.model_name, model.context_window) == (
        "anthropic",
        "claude-sonnet-4-6",
        200_000,
    )
    other = AnthropicModel("x", api_key="k", base_url="http://127.0.0.1:9", context_window=1000)
    assert other.context_window == 1000


# -- streaming ------------------------------------------------------------------------------


async def test_stream_yields_deltas_as_they_arrive(server: WireServer) -> None:
    gate = threading.Event()
    server.push(Reply(text="one two three", gate=gate, input_tokens=7, output_tokens=3))
    seen_before_release: list[str] = []
    final: list[AssistantMessage] = []
    async for item in make_model(server).stream(HELLO, [], SETTINGS):
        if isinstance(item, str):
            if not gate.is_set():
                # The server holds the rest of the answer until we have seen this delta.
                seen_before_release.append(item)
                gate.set()
        else:
            final.append(item)
    assert seen_before_release == ["one "]
    assert final[0].text == "one two three"
    assert final[0].usage == Usage(requests=1, input_tokens=7, output_tokens=3)
    assert server.requests[0].body["stream"] is True


async def test_stream_text_and_tool_calls_are_assembled(server: WireServer) -> None:
    server.push(
        Reply(
            text="Let me check the weather.",
            tool_calls=(
                ToolCall("get_weather", {"city": "São Paulo", "unit": "celsius"}, id="toolu_x"),
                ToolCall("add", {}, id="toolu_y"),
            ),
            input_tokens=40,
            output_tokens=30,
            cache_read_tokens=1000,
            cache_write_tokens=12,
        )
    )
    deltas, final = await collect(make_model(server), HELLO, [WEATHER, ADD])
    assert deltas == ["Let ", "me ", "check ", "the ", "weather."]
    assert final.parts == (
        TextPart(text="Let me check the weather."),
        ToolCallPart(
            id="toolu_x", name="get_weather", args={"city": "São Paulo", "unit": "celsius"}
        ),
        ToolCallPart(id="toolu_y", name="add", args={}),
    )
    assert final.finish_reason == "tool_calls"
    assert final.usage == Usage(
        requests=1,
        input_tokens=1052,
        output_tokens=30,
        cache_read_tokens=1000,
        cache_write_tokens=12,
    )
    assert server.requests[0].body["tools"][-1]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize("raw", ['{"city": "Par', "[1, 2]"])
async def test_stream_invalid_tool_json_is_kept_raw(server: WireServer, raw: str) -> None:
    server.push(Reply(tool_calls=(ToolCall("get_weather", raw, id="toolu_bad"),)))
    deltas, final = await collect(make_model(server), HELLO, [WEATHER])
    assert deltas == []
    assert final.parts == (ToolCallPart(id="toolu_bad", name="get_weather", args={}, raw_args=raw),)


# -- retries and errors ---------------------------------------------------------------------


async def test_429_with_retry_after_is_retried(server: WireServer) -> None:
    server.push(error_reply(429, "slow down", {"retry-after": "0.05"}), Reply(text="ok"))
    started = time.monotonic()
    result = await make_model(server).request(HELLO, [], SETTINGS)
    assert result.text == "ok"
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.05  # the header, not the 0.01 s backoff


async def test_retry_after_ms_is_honoured(server: WireServer) -> None:
    server.push(error_reply(429, "slow down", {"retry-after-ms": "60"}), Reply(text="ok"))
    started = time.monotonic()
    assert (await make_model(server).request(HELLO, [], SETTINGS)).text == "ok"
    assert time.monotonic() - started >= 0.06


async def test_529_overloaded_is_retried(server: WireServer) -> None:
    server.push(error_reply(529, "Overloaded"), Reply(text="ok"))
    assert (await make_model(server).request(HELLO, [], SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_stream_retries_before_the_first_delta(server: WireServer) -> None:
    server.push(
        error_reply(529, "Overloaded"),
        Reply(text="", stream_error="Overloaded"),  # an error event before any delta
        Reply(text="fine"),
    )
    deltas, final = await collect(make_model(server), HELLO)
    assert deltas == ["fine"]
    assert final.text == "fine"
    assert len(server.requests) == 3


async def test_stream_error_after_a_delta_is_not_retried(server: WireServer) -> None:
    server.push(Reply(text="partial answer", stream_error="Overloaded"), Reply(text="never"))
    seen: list[str] = []
    with pytest.raises(ModelError, match="anthropic:claude-test stream failed") as caught:
        async for item in make_model(server).stream(HELLO, [], SETTINGS):
            assert isinstance(item, str)
            seen.append(item)
    assert seen == ["partial ", "answer"]
    assert "Overloaded" in str(caught.value)
    assert len(server.requests) == 1


async def test_400_is_a_model_error_with_the_server_message(server: WireServer) -> None:
    server.push(error_reply(400, "messages: field required"), Reply(text="never"))
    with pytest.raises(ModelError) as caught:
        await make_model(server).request(HELLO, [], SETTINGS)
    error = caught.value
    assert str(error) == (
        "anthropic:claude-test request failed with HTTP 400: messages: field required."
    )
    assert (error.status, error.retryable) == (400, False)
    assert len(server.requests) == 1


async def test_401_mentions_the_api_key_variable(server: WireServer) -> None:
    server.push(error_reply(401, "invalid x-api-key"))
    with pytest.raises(ModelError, match="ANTHROPIC_API_KEY") as caught:
        await make_model(server).request(HELLO, [], SETTINGS)
    assert caught.value.status == 401
    assert "invalid x-api-key" in str(caught.value)


async def test_retries_run_out(server: WireServer) -> None:
    server.push(*[error_reply(503, "busy")] * 3)
    model = make_model(server, RetryPolicy(max_retries=2, initial_delay=0.01))
    with pytest.raises(ModelError, match="HTTP 503: busy") as caught:
        async for _ in model.stream(HELLO, [], SETTINGS):
            pass
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert len(server.requests) == 3


async def test_unreachable_server_is_a_clear_model_error() -> None:
    with WireServer() as gone:
        url = gone.url
    model = AnthropicModel(
        "claude-test", api_key="k", base_url=url, retry=RetryPolicy(max_retries=1, initial_delay=0)
    )
    with pytest.raises(ModelError, match=re.escape(f"cannot connect to {url}")) as caught:
        await model.request(HELLO, [], SETTINGS)
    assert caught.value.retryable is True


# -- construction ---------------------------------------------------------------------------


async def test_infer_model_reads_the_sdk_environment(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    server.push(Reply(text="from env"))
    model = infer_model("anthropic:claude-haiku-4-5")
    assert isinstance(model, AnthropicModel)
    assert (await model.request(HELLO, [], SETTINGS)).text == "from env"
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer env-key"
    assert sent.body["model"] == "claude-haiku-4-5"
    assert json.loads(json.dumps(sent.body))["messages"][0]["role"] == "user"
