"""Token usage from OpenAI-compatible servers: reported when the server reports it
(streaming included, through ``stream_options``), else estimated and said to be
(``OpenAIModel.usage_estimated``), never "0 in / 0 out".

Against the scripted wire server and a real ``llama_cpp.server``, which accepts
``stream_options`` but sends no usage when streaming.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from llama_server import llama_server, needs_server
from loopwise import Agent
from loopwise.events import ModelResponded, RunFinished
from loopwise.messages import AssistantMessage, Message, UserMessage
from loopwise.models import ModelSettings
from loopwise.models.openai import OpenAIModel
from loopwise.models.retry import RetryPolicy
from wire_servers import RecordedRequest, Reply, WireServer, error_reply

pytestmark = pytest.mark.anyio

SETTINGS = ModelSettings(max_tokens=64)
HELLO: list[Message] = [UserMessage.text("Say hello to the new colleague in one sentence.")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def make(url: str, name: str = "m") -> OpenAIModel:
    return OpenAIModel(
        name, base_url=url, provider="openai-compatible", retry=RetryPolicy(initial_delay=0.01)
    )


def completion(text: str, usage: dict[str, int] | None) -> Reply:
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return Reply(raw_body=json.dumps(body))


async def streamed(model: OpenAIModel) -> AssistantMessage:
    final = [i async for i in model.stream(HELLO, [], SETTINGS) if not isinstance(i, str)]
    assert len(final) == 1
    return final[0]


def refuse_unknown_fields(request: RecordedRequest) -> Reply:
    """A server that validates strictly: any field it does not know is a 422."""
    if "stream_options" in request.body:
        return error_reply(422, "Extra inputs are not permitted")
    return Reply(text="Hello there, welcome aboard!")


# (case, what the server does, whether usage is estimated)
CASES: list[tuple[str, Any, bool]] = [
    ("reported", Reply(text="Hello!", input_tokens=21, output_tokens=3), False),
    ("no usage", completion("Hello there, welcome aboard!", None), True),
    ("zero usage", completion("Hello there!", {"prompt_tokens": 0, "completion_tokens": 0}), True),
    ("prompt only", completion("Hello!", {"prompt_tokens": 21, "completion_tokens": 0}), True),
]


@pytest.mark.parametrize(("case", "reply", "estimated"), CASES, ids=[c[0] for c in CASES])
async def test_request_usage_is_reported_or_estimated(
    server: WireServer, case: str, reply: Reply, estimated: bool
) -> None:
    server.push(reply)
    model = make(server.openai_url)
    usage = (await model.request(HELLO, [], SETTINGS)).usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0
    assert model.usage_estimated is estimated
    if case in ("reported", "prompt only"):
        assert usage.input_tokens == 21  # what the server said is kept


async def test_streamed_usage_comes_from_the_server_when_asked(server: WireServer) -> None:
    server.push(Reply(text="Hello there!", input_tokens=30, output_tokens=4))
    model = make(server.openai_url)
    final = await streamed(model)
    assert server.bodies[0]["stream_options"] == {"include_usage": True}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 4)
    assert not model.usage_estimated


async def test_a_server_refusing_stream_options_gets_estimates(server: WireServer) -> None:
    server.push(refuse_unknown_fields, refuse_unknown_fields, refuse_unknown_fields)
    model = make(server.openai_url)
    final = await streamed(model)
    assert final.text == "Hello there, welcome aboard!"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert model.usage_estimated
    await streamed(model)  # remembered: not asked with stream_options again
    assert ["stream_options" in b for b in server.bodies] == [True, False, False]


async def test_a_request_bad_for_another_reason_still_fails(server: WireServer) -> None:
    server.default = error_reply(400, "context length exceeded")
    model = make(server.openai_url)
    with pytest.raises(Exception, match="context length exceeded"):
        await streamed(model)
    assert len(server.requests) == 2  # once with stream_options, once without


async def test_an_agent_run_never_shows_zero_tokens(server: WireServer) -> None:
    server.reject_stream_options = True  # the OpenAI wire without usage in streams
    server.push(Reply(text="Hello there, welcome aboard!"))
    model = make(server.openai_url)
    events = [e async for e in Agent(model).stream("Greet the new colleague.")]
    [responded] = [e for e in events if isinstance(e, ModelResponded)]
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    assert responded.usage.input_tokens > 0 and responded.usage.output_tokens > 0
    assert finished.usage.total_tokens == responded.total_usage.total_tokens > 0
    assert model.usage_estimated


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log: Path = tmp_path_factory.mktemp("llama_usage") / "server.log"
    with llama_server(log) as (url, ready):
        figure(f"llama_cpp.server for the usage tests: ready in {ready:.1f} s")
        yield url


@needs_server
@pytest.mark.slow
async def test_llama_cpp_server_streams_without_usage_so_it_is_estimated(
    llama_url: str,
) -> None:
    model, fresh = make(llama_url, "smollm2"), make(llama_url, "smollm2")
    try:
        final = await streamed(model)
        # Without streaming the server reports usage, which is taken as it is.
        reply = await fresh.request(HELLO, [], ModelSettings(max_tokens=8, temperature=0.0))
    finally:  # uvicorn keeps connections alive: close them on this event loop
        await model.aclose()
        await fresh.aclose()
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert model.usage_estimated
    assert reply.usage.input_tokens > 0 and not fresh.usage_estimated
    figure(
        "llama_cpp.server usage: streamed "
        f"{final.usage.input_tokens} in / {final.usage.output_tokens} out (estimated), "
        f"request {reply.usage.input_tokens} in / {reply.usage.output_tokens} out (reported)"
    )


HOSTILE_USAGE: list[dict[str, Any]] = [
    {"prompt_tokens": -5, "completion_tokens": -1},
    {"prompt_tokens": "12", "completion_tokens": "3"},
    {"prompt_tokens": 12.5, "completion_tokens": None},
    {"prompt_tokens": True, "completion_tokens": False},
    {"prompt_tokens": None, "completion_tokens": None, "prompt_tokens_details": "x"},
    {"prompt_tokens": [1], "completion_tokens": {"n": 3}},
]


@pytest.mark.parametrize("usage", HOSTILE_USAGE)
async def test_usage_that_is_not_a_count_is_estimated(
    server: WireServer, usage: dict[str, Any]
) -> None:
    server.push(completion("Hello there!", usage))
    model = make(server.openai_url)
    reply = await model.request(HELLO, [], SETTINGS)
    counts = (reply.usage.input_tokens, reply.usage.output_tokens)
    assert all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts)
    assert model.usage_estimated
    if usage is HOSTILE_USAGE[-1]:
        figure(f"usage from servers: {len(HOSTILE_USAGE)} malformed usage objects, all estimated")
