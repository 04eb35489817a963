"""OpenAIModel against a real HTTP server speaking chat completions, through the real SDK."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

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
from loopwise.models.openai import OpenAIModel
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
HELLO: list[Message] = [UserMessage.text("hello")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "OPENAI_ORG_ID"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def make_model(
    server: WireServer, provider: str = "openai", retry: RetryPolicy = FAST
) -> OpenAIModel:
    return OpenAIModel(
        "gpt-test", base_url=server.openai_url, api_key="test-key", provider=provider, retry=retry
    )


async def collect(
    model: OpenAIModel, messages: list[Message], tools: list[ToolDefinition] | None = None
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


# -- request mapping ------------------------------------------------------------------------


async def test_request_maps_messages_tools_and_results(server: WireServer) -> None:
    server.push(Reply(text="done"))
    messages: list[Message] = [
        SystemMessage(content="You are terse."),
        UserMessage.text("Weather in Paris and 1+1?"),
        AssistantMessage(
            parts=(
                TextPart(text="Checking."),
                ToolCallPart(id="call_1", name="get_weather", args={"city": "Paris"}),
                ToolCallPart(id="call_2", name="add", raw_args="{not json"),
            )
        ),
        UserMessage(
            parts=(
                ToolResultPart(call_id="call_1", name="get_weather", content="sunny"),
                ToolResultPart(call_id="call_2", name="add", content="bad JSON", is_error=True),
                TextPart(text="Note: 3 steps left."),
            )
        ),
    ]
    result = await make_model(server).request(messages, [WEATHER, ADD], SETTINGS)

    assert result.text == "done"
    [sent] = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    body = sent.body
    assert body["model"] == "gpt-test"
    assert body["max_completion_tokens"] == 256
    assert "max_tokens" not in body
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris and 1+1?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "add", "arguments": "{not json"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "bad JSON"},
        {"role": "user", "content": "Note: 3 steps left."},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": WEATHER.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers.",
                "parameters": ADD.parameters,
            },
        },
    ]
    assert body["tool_choice"] == "auto"
    for absent in ("temperature", "stop", "stream", "stream_options"):
        assert absent not in body


async def test_assistant_with_only_tool_calls_has_null_content(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    messages: list[Message] = [
        UserMessage.text("go"),
        AssistantMessage(parts=(ToolCallPart(id="c", name="add", args={"a": 1}),)),
        UserMessage(parts=(ToolResultPart(call_id="c", name="add", content="1"),)),
    ]
    await make_model(server).request(messages, [ADD], SETTINGS)
    wire = server.requests[0].body["messages"]
    assert wire[1]["content"] is None
    assert wire[2] == {"role": "tool", "tool_call_id": "c", "content": "1"}
    assert len(wire) == 3  # no empty user message after the tool result


async def test_images_and_documents(server: WireServer) -> None:
    server.push(Reply(text="seen"))
    user = UserMessage(
        parts=(
            TextPart(text="Look:"),
            ImagePart(media_type="image/png", data=PNG_1PX),
            DocumentPart(media_type="application/pdf", data="JVBERi0xLjQ=", text="Page one."),
        )
    )
    await make_model(server).request([user], [], SETTINGS)
    content = server.requests[0].body["messages"][0]["content"]
    pdf_url = "data:application/pdf;base64,JVBERi0xLjQ="
    assert content == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": pdf_url}},
    ]
    # A model without vision: a stand-in for the image, the PDF's text or a placeholder.
    server.push(Reply(text="seen"))
    user = UserMessage(parts=(*user.parts, DocumentPart(media_type="text/csv", data="A" * 400)))
    model = make_model(server, provider="vllm")
    await model.request([user], [], SETTINGS)
    assert model.vision is False
    assert server.requests[1].body["messages"][0]["content"] == (
        "Look:\n\n[image: 1x1 PNG, not shown: model has no vision]\n\nPage one.\n\n"
        "[document: text/csv, 300 bytes, not shown]"
    )


@pytest.mark.parametrize("choice", ["auto", "required", "none"])
async def test_settings_reach_the_wire(server: WireServer, choice: str) -> None:
    server.push(Reply(text="ok"))
    settings = ModelSettings(
        max_tokens=99, temperature=0.2, stop_sequences=("END",), timeout=30, tool_choice=choice
    )
    await make_model(server).request(HELLO, [WEATHER], settings)
    body = server.requests[0].body
    assert body["tool_choice"] == choice
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END"]
    assert body["max_completion_tokens"] == 99


async def test_no_tools_means_no_tools_or_tool_choice(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    await make_model(server).request(HELLO, [], ModelSettings(tool_choice="required"))
    body = server.requests[0].body
    assert "tools" not in body
    assert "tool_choice" not in body


async def test_compatible_servers_get_max_tokens(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    model = OpenAIModel("qwen3:8b", base_url=server.openai_url, provider="vllm", retry=FAST)
    await model.request(HELLO, [], SETTINGS)
    sent = server.requests[0]
    assert sent.body["max_tokens"] == 256
    assert "max_completion_tokens" not in sent.body
    assert sent.headers["authorization"] == "Bearer not-needed"


# -- response mapping -----------------------------------------------------------------------


async def test_response_text_tool_calls_and_usage(server: WireServer) -> None:
    server.push(
        Reply(
            text="Checking.",
            tool_calls=(
                ToolCall("get_weather", {"city": "Oslo"}, id="call_a"),
                ToolCall("add", {"a": 2}, id="call_b"),
            ),
            input_tokens=120,
            output_tokens=30,
            cache_read_tokens=100,
        )
    )
    model = make_model(server)
    assert isinstance(model, StreamingModel)
    result = await model.request(HELLO, [WEATHER, ADD], SETTINGS)
    assert result.parts == (
        TextPart(text="Checking."),
        ToolCallPart(id="call_a", name="get_weather", args={"city": "Oslo"}),
        ToolCallPart(id="call_b", name="add", args={"a": 2}),
    )
    assert result.usage == Usage(
        requests=1, input_tokens=120, output_tokens=30, cache_read_tokens=100
    )
    assert result.finish_reason == "tool_calls"
    assert result.model_name == "gpt-test"


@pytest.mark.parametrize("raw", ['{"city": "Par', "[1, 2]", '"just a string"'])
async def test_invalid_tool_arguments_are_kept_raw(server: WireServer, raw: str) -> None:
    reply = Reply(tool_calls=(ToolCall("get_weather", raw, id="call_bad"),))
    server.push(reply, reply)
    model = make_model(server)
    expected = (ToolCallPart(id="call_bad", name="get_weather", args={}, raw_args=raw),)
    assert (await model.request(HELLO, [WEATHER], SETTINGS)).parts == expected
    assert (await collect(model, HELLO, [WEATHER]))[1].parts == expected


async def test_missing_tool_call_id_is_generated(server: WireServer) -> None:
    reply = Reply(tool_calls=(ToolCall("add", {"a": 1}, id=""),))
    server.push(reply, reply)
    model = make_model(server)
    for result in (
        await model.request(HELLO, [ADD], SETTINGS),
        (await collect(model, HELLO, [ADD]))[1],
    ):
        [call] = result.tool_calls
        assert re.fullmatch(r"call_[0-9a-f]{12}", call.id)
        assert call.args == {"a": 1}


@pytest.mark.parametrize(
    ("wire", "ours"),
    [("stop", "stop"), ("length", "max_tokens"), ("content_filter", "content_filter")],
)
async def test_finish_reasons(server: WireServer, wire: str, ours: str) -> None:
    server.push(Reply(text="x", stop_reason=wire), Reply(text="x", stop_reason=wire))
    model = make_model(server)
    assert (await model.request(HELLO, [], SETTINGS)).finish_reason == ours
    assert (await collect(model, HELLO))[1].finish_reason == ours


async def test_stop_with_tool_calls_means_tool_calls(server: WireServer) -> None:
    """Some compatible servers say ``stop`` after tool calls."""
    server.push(Reply(tool_calls=(ToolCall("add", {"a": 1}),), stop_reason="stop"))
    result = await make_model(server, provider="ollama").request(HELLO, [ADD], SETTINGS)
    assert result.finish_reason == "tool_calls"


def test_names_and_context_window() -> None:
    model = OpenAIModel("gpt-4.1-mini", api_key="k", base_url="http://127.0.0.1:9")
    assert (model.provider, model.model_name, model.context_window) == (
        "openai",
        "gpt-4.1-mini",
        1_047_576,
    )
    local = OpenAIModel("qwen3:8b", base_url="http://127.0.0.1:9/v1", provider="ollama")
    assert (local.provider, local.context_window) == ("ollama", None)
    sized = OpenAIModel("q", base_url="http://127.0.0.1:9/v1", provider="vllm", context_window=8192)
    assert sized.context_window == 8192


# -- streaming ------------------------------------------------------------------------------


async def test_stream_yields_deltas_as_they_arrive(server: WireServer) -> None:
    gate = threading.Event()
    server.push(Reply(text="one two three", gate=gate))
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


async def test_stream_assembles_tool_calls_and_usage(server: WireServer) -> None:
    server.push(
        Reply(
            text="Let me check.",
            tool_calls=(
                ToolCall("get_weather", {"city": "São Paulo", "unit": "celsius"}, id="call_x"),
                ToolCall("add", {"a": 1.5}, id="call_y"),
            ),
            input_tokens=50,
            output_tokens=25,
            cache_read_tokens=32,
            cache_write_tokens=8,
        )
    )
    deltas, final = await collect(make_model(server), HELLO, [WEATHER, ADD])
    assert deltas == ["Let ", "me ", "check."]
    assert final.parts == (
        TextPart(text="Let me check."),
        ToolCallPart(
            id="call_x", name="get_weather", args={"city": "São Paulo", "unit": "celsius"}
        ),
        ToolCallPart(id="call_y", name="add", args={"a": 1.5}),
    )
    assert final.finish_reason == "tool_calls"
    assert final.usage == Usage(
        requests=1, input_tokens=50, output_tokens=25, cache_read_tokens=32, cache_write_tokens=8
    )
    body = server.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_options_rejected_then_dropped(server: WireServer) -> None:
    server.reject_stream_options = True
    server.push(Reply(text="first"), Reply(text="second"))
    model = make_model(server, provider="llamacpp")
    deltas, final = await collect(model, HELLO)
    assert deltas == ["first"]
    # No usage without stream_options: estimated (not 0 in / 0 out), and said so.
    assert final.usage.requests == 1 and final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0 and model.usage_estimated
    assert [("stream_options" in b) for b in server.bodies] == [True, False]
    # The model remembers: the next stream does not ask again.
    assert (await collect(model, HELLO))[0] == ["second"]
    assert len(server.requests) == 3


# -- retries and errors ---------------------------------------------------------------------


async def test_429_with_retry_after_is_retried(server: WireServer) -> None:
    server.push(error_reply(429, "Rate limit reached", {"retry-after": "0.05"}), Reply(text="ok"))
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


async def test_503_is_retried_for_requests_and_streams(server: WireServer) -> None:
    server.push(
        error_reply(503, "busy"), Reply(text="ok"), error_reply(503, "busy"), Reply(text="s")
    )
    model = make_model(server)
    assert (await model.request(HELLO, [], SETTINGS)).text == "ok"
    assert (await collect(model, HELLO))[0] == ["s"]
    assert len(server.requests) == 4


async def test_stream_error_after_a_delta_is_not_retried(server: WireServer) -> None:
    server.push(Reply(text="partial answer", stream_error="server melted"), Reply(text="never"))
    seen: list[str] = []
    with pytest.raises(ModelError, match="server melted"):
        async for item in make_model(server).stream(HELLO, [], SETTINGS):
            assert isinstance(item, str)
            seen.append(item)
    assert seen == ["partial ", "answer"]
    assert len(server.requests) == 1


async def test_400_is_a_model_error_with_the_server_message(server: WireServer) -> None:
    server.push(error_reply(400, "Invalid value for 'tool_choice'."), Reply(text="never"))
    with pytest.raises(ModelError) as caught:
        await make_model(server).request(HELLO, [], SETTINGS)
    error = caught.value
    assert str(error) == (
        "openai:gpt-test request failed with HTTP 400: Invalid value for 'tool_choice'."
    )
    assert (error.status, error.retryable) == (400, False)
    assert len(server.requests) == 1


async def test_401_mentions_the_api_key_variable(server: WireServer) -> None:
    server.push(error_reply(401, "Incorrect API key provided"))
    with pytest.raises(ModelError, match="OPENAI_API_KEY") as caught:
        await make_model(server).request(HELLO, [], SETTINGS)
    assert caught.value.status == 401
    assert "Incorrect API key provided" in str(caught.value)


async def test_retries_run_out(server: WireServer) -> None:
    server.push(*[error_reply(502, "bad gateway")] * 3)
    model = make_model(server, retry=RetryPolicy(max_retries=2, initial_delay=0.01))
    with pytest.raises(ModelError, match="HTTP 502: bad gateway") as caught:
        await model.request(HELLO, [], SETTINGS)
    assert (caught.value.status, caught.value.retryable) == (502, True)
    assert len(server.requests) == 3


async def test_non_json_error_body_is_shown(server: WireServer) -> None:
    server.push(Reply(status=404, raw_body="404 page not found"))
    with pytest.raises(ModelError, match="HTTP 404: 404 page not found"):
        await make_model(server, provider="ollama").request(HELLO, [], SETTINGS)


async def test_unreachable_server_is_a_clear_model_error() -> None:
    with WireServer() as gone:
        url = gone.openai_url
    model = OpenAIModel(
        "m", base_url=url, provider="vllm", retry=RetryPolicy(max_retries=1, initial_delay=0)
    )
    with pytest.raises(ModelError, match="vllm:m request failed: cannot connect to") as caught:
        await model.request(HELLO, [], SETTINGS)
    assert caught.value.retryable is True


# -- construction through infer_model -------------------------------------------------------


async def test_ollama_uses_ollama_host(server: WireServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")  # no scheme, as Ollama allows
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-for-openai")
    server.push(Reply(text="local"))
    model = infer_model("ollama:qwen3:8b")
    assert isinstance(model, OpenAIModel)
    assert (model.provider, model.model_name) == ("ollama", "qwen3:8b")
    assert (await model.request(HELLO, [], SETTINGS)).text == "local"
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "qwen3:8b"
    assert sent.body["max_tokens"] == 256
    assert sent.headers["authorization"] == "Bearer not-needed"  # the OpenAI key stays home


@pytest.mark.parametrize("provider", ["openai-compatible", "vllm", "llamacpp"])
async def test_compatible_providers_use_openai_base_url(
    server: WireServer, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    server.push(Reply(text="compatible"))
    model = infer_model(f"{provider}:my-model")
    assert model.provider == provider
    assert (await model.request(HELLO, [], SETTINGS)).text == "compatible"
    assert server.requests[0].body["model"] == "my-model"


async def test_openai_reads_the_sdk_environment(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    server.push(Reply(text="env"))
    model = infer_model("openai:gpt-4.1")
    assert (await model.request(HELLO, [], SETTINGS)).text == "env"
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


def test_openai_without_a_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        infer_model("openai:gpt-4.1")
