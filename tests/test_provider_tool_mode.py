"""Tool modes and garbage from servers: OpenAIModel through the real SDK against a real server.

``auto`` must find out, from what the server does, whether tools work natively and switch
to constrained JSON when they do not; garbage (invalid tool arguments, truncated streams,
bodies that are not chat completions) must end as an observation or a clear ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, tool
from loopwise.errors import ModelError, UsageError
from loopwise.messages import AssistantMessage, Message, ToolCallPart, ToolDefinition, UserMessage
from loopwise.models import ModelSettings
from loopwise.models._tool_mode import looks_like_call
from loopwise.models.openai import OpenAIModel
from loopwise.models.retry import RetryPolicy
from wire_servers import RecordedRequest, Reply, ToolCall, WireServer, error_reply

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay=0.01)
SETTINGS = ModelSettings(max_tokens=128)
ADD = ToolDefinition(
    name="add",
    description="Add two numbers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
ASK: list[Message] = [UserMessage.text("What is 2+3?")]
CALL_JSON = json.dumps({"tool": "add", "arguments": {"a": 2, "b": 3}})


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOPWISE_TOOL_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def make(server: WireServer, tool_mode: str | None = None) -> OpenAIModel:
    return OpenAIModel(
        "m",
        base_url=server.openai_url,
        provider="openai-compatible",
        retry=FAST,
        tool_mode=tool_mode,
    )


def tools_refused(request: RecordedRequest) -> Reply:
    if "tools" in request.body:
        return error_reply(400, "registry.example/m does not support tools")
    return Reply(text=CALL_JSON)


def system_text(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"]) if body["messages"][0]["role"] == "system" else ""


# -- choosing the mode ------------------------------------------------------------------------


def test_modes_default_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    assert OpenAIModel("gpt-x", base_url=url, api_key="k").tool_mode == "native"
    assert OpenAIModel("m", base_url=url, provider="vllm").tool_mode == "auto"
    assert OpenAIModel("m", base_url=url, provider="ollama", tool_mode="json").tool_mode == "json"
    monkeypatch.setenv("LOOPWISE_TOOL_MODE", "json")
    assert OpenAIModel("m", base_url=url, provider="llamacpp").tool_mode == "json"
    monkeypatch.setenv("LOOPWISE_TOOL_MODE", "grammar")
    with pytest.raises(UsageError, match="LOOPWISE_TOOL_MODE must be one of auto, native, json"):
        OpenAIModel("m", base_url=url, provider="llamacpp")
    with pytest.raises(UsageError, match="tool_mode must be one of"):
        OpenAIModel("m", base_url=url, provider="llamacpp", tool_mode="xml")


async def test_auto_switches_to_json_when_tools_are_refused(server: WireServer) -> None:
    server.default = tools_refused
    model = make(server)
    reply = await model.request(ASK, [ADD], SETTINGS)

    [call] = reply.tool_calls
    assert (call.name, call.args, reply.finish_reason) == ("add", {"a": 2, "b": 3}, "tool_calls")
    assert model.tool_mode == "json"
    assert "does not support tools" in (model.tool_mode_reason or "")
    refused, constrained = server.bodies
    assert "tools" in refused and "tools" not in constrained
    assert constrained["response_format"]["type"] == "json_schema"
    schema = constrained["response_format"]["json_schema"]["schema"]
    assert [o["properties"].get("tool", {}).get("const") for o in schema["oneOf"]] == ["add", None]
    assert "- add: Add two numbers." in system_text(constrained)

    await model.request(ASK, [ADD], SETTINGS)  # decided for good: straight to json
    assert len(server.requests) == 3 and "tools" not in server.bodies[2]


async def test_auto_switches_when_the_call_comes_as_text(server: WireServer) -> None:
    server.push(Reply(text='Sure: {"name": "add", "arguments": {"a": 2, "b": 3}}'))
    server.push(Reply(text=CALL_JSON))
    model = make(server)
    reply = await model.request(ASK, [ADD], SETTINGS)
    assert reply.tool_calls[0].args == {"a": 2, "b": 3}
    assert model.tool_mode == "json"
    assert "as text" in (model.tool_mode_reason or "")


@pytest.mark.parametrize(
    ("text", "attempt"),
    [
        ('{"name": "add", "arguments": {"a": 2}}', True),
        ('```json\n{"function": {"name": "add", "arguments": "{}"}}\n```', True),
        ("<tool_call>add(2, 3)</tool_call>", True),
        ('{"tool": "add", "arguments": {"a": 2,', True),  # cut off, still names the tool
        ('{"name": "Alice", "age": 3}', False),  # an answer that happens to be JSON
        ("The sum is 5.", False),
    ],
)
def test_what_counts_as_a_call_written_as_text(text: str, attempt: bool) -> None:
    assert looks_like_call(text, [ADD]) is attempt


async def test_auto_probes_whether_the_tools_reached_the_prompt(server: WireServer) -> None:
    server.push(Reply(text="5", input_tokens=43))  # with tools: no call
    server.push(Reply(text="T", input_tokens=43))  # the probe without tools: same prompt
    server.push(Reply(text=CALL_JSON))
    model = make(server)
    reply = await model.request(ASK, [ADD], SETTINGS)
    assert reply.tool_calls and model.tool_mode == "json"
    assert "43 prompt tokens with the tools, 43 without" in (model.tool_mode_reason or "")
    probe = server.bodies[1]
    assert "tools" not in probe and probe["max_tokens"] == 1


async def test_auto_keeps_native_when_the_tools_reached_the_prompt(server: WireServer) -> None:
    server.push(Reply(text="5", input_tokens=90), Reply(text="T", input_tokens=43))
    server.push(Reply(text="still no call", input_tokens=95))
    model = make(server)
    reply = await model.request(ASK, [ADD], SETTINGS)
    assert reply.text == "5" and model.tool_mode == "native"
    await model.request(ASK, [ADD], SETTINGS)
    assert len(server.requests) == 3  # probed once, never again


async def test_auto_keeps_native_after_a_real_tool_call_and_then_streams(
    server: WireServer,
) -> None:
    server.push(Reply(tool_calls=(ToolCall("add", {"a": 2, "b": 3}),)))
    server.push(Reply(text="The sum is five."))
    model = make(server)
    assert (await model.request(ASK, [ADD], SETTINGS)).tool_calls
    assert model.tool_mode == "native"
    items = [i async for i in model.stream(ASK, [ADD], SETTINGS)]
    assert items[:-1] == ["The ", "sum ", "is ", "five."]  # streamed chunk by chunk
    assert server.bodies[1]["stream"] is True


async def test_json_falls_back_to_the_json_object_form_and_remembers(server: WireServer) -> None:
    def llama_cpp_python(request: RecordedRequest) -> Reply:
        if request.body["response_format"]["type"] == "json_schema":
            message = "1 validation error: Input should be 'text' or 'json_object'"
            return error_reply(500, message)
        return Reply(text=CALL_JSON)

    server.default = llama_cpp_python
    model = make(server, tool_mode="json")
    assert (await model.request(ASK, [ADD], SETTINGS)).tool_calls
    assert len(server.requests) == 2  # the refusing 500 was not retried
    assert server.bodies[1]["response_format"]["type"] == "json_object"
    assert server.bodies[1]["response_format"]["schema"]["oneOf"]
    await model.request(ASK, [ADD], SETTINGS)
    assert server.bodies[2]["response_format"]["type"] == "json_object"


async def test_json_mode_replays_history_as_plain_turns(server: WireServer) -> None:
    server.push(Reply(text=CALL_JSON), Reply(text=json.dumps({"answer": "5"})))
    agent = Agent(make(server, tool_mode="json"), tools=[add], max_steps=3)
    result = await agent.run("What is 2+3?")
    assert (result.status, result.output) == ("completed", "5")
    roles = [m["role"] for m in server.bodies[1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "Tool add returned: 5" in server.bodies[1]["messages"][3]["content"]


async def test_neither_tools_nor_json_schema_is_a_clear_failure(server: WireServer) -> None:
    def nothing(request: RecordedRequest) -> Reply:
        if "tools" in request.body:
            return error_reply(400, "tools are not supported")
        return error_reply(400, "response_format is not supported")

    server.default = nothing
    model = make(server)
    with pytest.raises(ModelError, match="supports neither tool calling") as caught:
        await model.request(ASK, [ADD], SETTINGS)
    assert "json_schema: HTTP 400; json_object+schema: HTTP 400" in str(caught.value)
    assert "tools are not supported" in str(caught.value)

    result = await Agent(make(server), tools=[add]).run("What is 2+3?")
    assert result.status == "failed"
    assert "supports neither tool calling" in (result.error or "")


async def test_explicit_json_mode_that_the_server_refuses_says_so(server: WireServer) -> None:
    server.default = error_reply(422, "unknown field response_format")
    with pytest.raises(ModelError, match="does not accept a JSON-schema response_format"):
        await make(server, tool_mode="json").request(ASK, [ADD], SETTINGS)


# -- garbage ----------------------------------------------------------------------------------


async def test_invalid_tool_arguments_become_an_observation(server: WireServer) -> None:
    server.push(Reply(tool_calls=(ToolCall("add", '{"a": 2, "b": '),)))
    server.push(Reply(tool_calls=(ToolCall("add", {"a": 2, "b": 3}),)))
    server.push(Reply(text="5"))
    result = await Agent(make(server, tool_mode="native"), tools=[add]).run("What is 2+3?")

    assert (result.status, result.output) == ("completed", "5")
    observation = server.bodies[1]["messages"][-1]
    assert observation["role"] == "tool" and "JSON" in observation["content"]
    calls = [c for m in result.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert calls[0].raw_args == '{"a": 2, "b": ' and calls[1].args == {"a": 2, "b": 3}


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply(text="partial answer", truncate=True), "stream ended before the reply"),
        (Reply(tool_calls=(ToolCall("add", {"a": 1}),), truncate=True), "no finish_reason"),
        (Reply(raw_events=("not json",)), "not a chat-completion chunk"),
        (Reply(raw_body="<html>Bad gateway</html>", content_type="text/html"), "text/html"),
    ],
    ids=["truncated-text", "truncated-call", "non-json-event", "html"],
)
async def test_broken_streams_fail_the_run_clearly(
    server: WireServer, reply: Reply, words: str
) -> None:
    server.push(reply)
    agent = Agent(make(server, tool_mode="native"), tools=[add])
    stream = agent.stream("What is 2+3?")
    async for _ in stream:
        pass
    result = stream.result
    assert result is not None and result.status == "failed"
    assert words in (result.error or "") and "\n" not in (result.error or "")


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "text/html", "not a chat completion"),
        ("{not json", "application/json", "not JSON"),
        ('{"id": "x", "object": "chat.completion"}', "application/json", "no choices"),
        ('{"id": "x", "choices": [{"index": 0}]}', "application/json", "malformed"),
    ],
    ids=["html", "non-json", "no-choices", "choice-without-message"],
)
async def test_garbage_bodies_fail_the_run_clearly(
    server: WireServer, body: str, content_type: str, words: str
) -> None:
    server.default = Reply(raw_body=body, content_type=content_type)
    result = await Agent(make(server, tool_mode="native"), tools=[add]).run("What is 2+3?")
    assert result.status == "failed"
    assert words in (result.error or "")
    assert "AttributeError" not in (result.error or "")


async def test_a_json_turn_cut_off_mid_object_is_text_not_a_crash(server: WireServer) -> None:
    server.push(Reply(text='{"tool": "add", "argu', stop_reason="length"))
    reply = await make(server, tool_mode="json").request(ASK, [ADD], SETTINGS)
    assert reply.finish_reason == "max_tokens" and not reply.tool_calls
    assert not any(isinstance(p, ToolCallPart) for p in reply.parts)


# -- a reply that is not a JSON turn, in json mode ----------------------------------------------

BROKEN = [
    ("The answer is 5.", "not valid JSON"),  # prose
    ('{"tool": "add", "arguments": {"a": 2,', "not valid JSON"),  # cut off, but "stop"
    ('{"answer": "5"} Hope this helps!', "text after the JSON object"),
    ('{"tool": "add", "arguments": {"a": 2, "b": 3}}\n{"answer": "5"}', "text after"),
    ("[2, 3]", "a JSON list, not an object"),
    ('{"result": 5}', 'neither "tool" nor "answer"'),
    ('{"answer": 5}', '"answer" must be a string'),
    ('{"tool": 7, "arguments": {}}', '"tool" must be the name of a tool'),
    ("{'tool': 'add', 'arguments': {'a': 2, 'b': 3}}", "not valid JSON"),  # Python, not JSON
    ("", "it is empty"),
    ("```json\n[1]\n```", "a JSON list"),
    ('"5"', "a JSON str, not an object"),
]


@pytest.mark.parametrize(("broken", "problem"), BROKEN)
async def test_a_broken_json_reply_is_corrected_not_the_answer(
    server: WireServer, broken: str, problem: str
) -> None:
    server.push(Reply(text=broken), Reply(text=CALL_JSON), Reply(text='{"answer": "5"}'))
    result = await Agent(make(server, tool_mode="json"), tools=[add], max_steps=4).run("2+3?")

    assert (result.status, result.output) == ("completed", "5")
    first = next(m for m in result.messages if isinstance(m, AssistantMessage))
    [invalid] = first.tool_calls
    assert invalid.raw_args == broken and invalid.args == {}
    assert invalid.name == ("add" if '"add"' in broken else "invalid_json_reply")
    # What the model saw next: its reply as it wrote it, then why it was refused.
    wire = server.bodies[1]["messages"]
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "user"]
    assert wire[2]["content"] == broken
    assert wire[3]["content"].startswith("[loopwise] Your last reply was not a valid turn: ")
    assert problem in wire[3]["content"]
    assert '{"answer": "<your answer>"}' in wire[3]["content"]
    if broken == BROKEN[-1][0]:
        figure(
            f"json tool mode: {len(BROKEN)} kinds of broken reply, each sent back to the "
            "model as a correction (none ended the run as an answer)"
        )


@pytest.mark.parametrize(
    "good",
    [
        '```json\n{"answer": "5"}\n```',
        '  \n{"answer": "5"}\n ',
        '{"answer": "5", "confidence": "high"}',  # an extra key is not an error
    ],
)
async def test_fenced_or_padded_answers_are_still_answers(server: WireServer, good: str) -> None:
    server.push(Reply(text=good))
    result = await Agent(make(server, tool_mode="json"), tools=[add]).run("2+3?")
    assert (result.status, result.output) == ("completed", "5")


async def test_broken_replies_forever_end_the_run_without_an_answer(server: WireServer) -> None:
    server.default = Reply(text="I think it is 5")
    result = await Agent(make(server, tool_mode="json"), tools=[add], max_steps=3).run("2+3?")
    assert result.status != "completed" and result.output is None
    assert len(server.requests) <= 3


async def test_an_answer_where_a_call_is_required_is_corrected(server: WireServer) -> None:
    server.push(Reply(text='{"answer": "5"}'))
    reply = await make(server, tool_mode="json").request(
        ASK, [ADD], ModelSettings(max_tokens=64, tool_choice="required")
    )
    [call] = reply.tool_calls
    assert call.raw_args == '{"answer": "5"}' and call.name == "invalid_json_reply"


async def test_a_turn_cut_off_at_the_limit_is_still_left_to_the_loop(server: WireServer) -> None:
    server.push(Reply(text='{"answer": "a long', stop_reason="length"))
    server.push(Reply(text='{"answer": "5"}'))
    result = await Agent(make(server, tool_mode="json"), tools=[add]).run("2+3?")
    assert (result.status, result.output) == ("completed", "5")
    assert "cut off" in server.bodies[1]["messages"][-1]["content"]


async def test_a_broken_reply_naming_a_tool_never_runs_it(server: WireServer) -> None:
    ran: list[bool] = []

    @tool
    def wipe(confirm: bool) -> str:
        """Delete everything."""
        ran.append(confirm)
        return "wiped"

    broken = '{"tool": "wipe", "arguments": {"confirm": tru'
    server.push(Reply(text=broken), Reply(text='{"answer": "no"}'))
    result = await Agent(make(server, tool_mode="json"), tools=[add, wipe]).run("Clean up.")
    assert (result.status, result.output, ran) == ("completed", "no", [])
    [call] = next(m for m in result.messages if isinstance(m, AssistantMessage)).tool_calls
    assert (call.name, call.raw_args) == ("wipe", broken)


async def test_a_huge_broken_reply_is_kept_short(server: WireServer) -> None:
    huge = "garbage " * 125_000  # 1 MB
    server.push(Reply(text=huge, chunks=(huge,)), Reply(text='{"answer": "5"}'))
    result = await Agent(make(server, tool_mode="json"), tools=[add]).run("2+3?")
    assert (result.status, result.output) == ("completed", "5")
    replayed = server.bodies[1]["messages"][2]["content"]
    assert replayed == huge[:4000]
