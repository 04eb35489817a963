"""Tool definitions: what is accepted, what is refused (one clear sentence), how arguments
validate, and tools made from JSON schemas (checked on the BFCL corpus when installed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import importlib.util
import json
import math
import os
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional

import pytest
from pydantic import BaseModel, Field, ValidationError

from loopwise import Tool, ToolContext, UsageError, tool
from loopwise import _schema_args as schema_args
from loopwise.output import FINAL_ANSWER_TOOL
from loopwise.tools import render_validation_error, tool_from_schema


def _one_sentence(exc: pytest.ExceptionInfo[UsageError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith((".", ")")), text
    return text


def _refused(args: dict[str, Any], t: Tool) -> str:
    """The observation the model would get for a refused call."""
    with pytest.raises(ValidationError) as info:
        t.validate(args)
    return render_validation_error(t, info.value)


# ---------------------------------------------------------------------------------------
# 1. Names


def test_names_providers_refuse_are_refused_at_definition() -> None:
    with pytest.raises(UsageError) as info:
        tool(lambda x: x)
    text = _one_sentence(info)
    assert "'<lambda>'" in text and "a-zA-Z" not in text
    assert "1 to 64" in text and "name=" in text
    with pytest.raises(UsageError, match="name="):
        tool(name="look up")(lambda x: x)
    with pytest.raises(UsageError, match="1 to 64"):
        tool(name="x" * 65)(lambda x: x)
    with pytest.raises(UsageError, match="1 to 64"):
        tool(name="math.sqrt")(lambda x: x)
    assert tool(name="x" * 64)(lambda x: x).name == "x" * 64
    assert tool(name="look-up_2")(lambda x: x).name == "look-up_2"


def test_final_answer_is_reserved() -> None:
    def final_answer(text: str) -> str:
        """Answer."""
        return text

    with pytest.raises(UsageError) as info:
        tool(final_answer)
    assert FINAL_ANSWER_TOOL in _one_sentence(info) and "reserved" in str(info.value)
    with pytest.raises(UsageError, match="reserved"):
        tool_from_schema(FINAL_ANSWER_TOOL, "x", {"type": "object"}, lambda: None)
    assert tool(name="answer")(final_answer).name == "answer"


# ---------------------------------------------------------------------------------------
# 2. Positional-only parameters


def test_positional_only_parameters_are_passed_by_position() -> None:
    def scale(value: float, factor: float = 2.0, /, *, unit: str = "m") -> str:
        """Scale a value."""
        return f"{value * factor} {unit}"

    t = tool(scale)
    assert t.parameters["required"] == ["value"]
    assert asyncio.run(t.call(t.validate({"value": 3}), None)) == "6.0 m"
    assert asyncio.run(t.call(t.validate({"value": 3, "factor": 3, "unit": "s"}), None)) == (
        "9.0 s"
    )


def test_async_positional_only_with_context() -> None:
    async def greet(ctx: ToolContext[str], name: str, /) -> str:
        """Greet someone."""
        return f"{ctx.deps} {name}"

    t = tool(greet)
    assert asyncio.iscoroutinefunction(t.function)
    assert list(t.parameters["properties"]) == ["name"]
    ctx = ToolContext("run", "call", "greet", 1, "hello")
    assert asyncio.run(t.call(t.validate({"name": "ada"}), ctx)) == "hello ada"


# ---------------------------------------------------------------------------------------
# 3. partial, builtins, callable objects, TypedDict


def _convert(amount: float, rate: float, currency: str = "EUR") -> str:
    """Convert an amount of money.

    Args:
        amount: How much to convert.
        rate: The exchange rate.
        currency: The target currency.
    """
    return f"{amount * rate:.2f} {currency}"


def test_partial_is_named_and_described_by_the_wrapped_function() -> None:
    t = tool(functools.partial(_convert, rate=2.0))
    assert t.name == "_convert"
    assert t.description == "Convert an amount of money."
    assert set(t.parameters["properties"]) == {"amount", "currency"}
    assert t.parameters["properties"]["amount"]["description"] == "How much to convert."
    assert asyncio.run(t.call(t.validate({"amount": 1.5}), None)) == "3.00 EUR"
    with pytest.raises(ValidationError):
        t.validate({"amount": 1, "rate": 3})  # bound: not the model's to set

    positional = tool(name="double")(functools.partial(_convert, 10.0))
    assert set(positional.parameters["properties"]) == {"rate", "currency"}
    assert asyncio.run(positional.call(positional.validate({"rate": 2}), None)) == "20.00 EUR"


def test_async_partial_and_async_callable_object() -> None:
    async def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    t = tool(functools.partial(add, b=1))
    assert asyncio.run(t.call(t.validate({"a": 1}), None)) == 2

    class Adder:
        """Add a fixed amount."""

        async def __call__(self, a: int) -> int:
            return a + 10

    with pytest.raises(UsageError, match="name="):
        tool(Adder())
    obj = tool(name="add_ten")(Adder())
    assert obj.description == "Add a fixed amount."
    assert asyncio.run(obj.call(obj.validate({"a": 1}), None)) == 11


def test_builtins_are_refused_with_a_fix() -> None:
    for builtin in (math.sqrt, max, len, str.upper, functools.partial(math.pow, 2)):
        with pytest.raises(UsageError) as info:
            tool(builtin)
        assert "wrap it in a typed def" in _one_sentence(info)
    with pytest.raises(UsageError, match="wrap it in a typed def"):
        tool(int)


class Movie(typing.TypedDict):
    """A film."""

    title: str
    year: int
    rating: NotRequired[float]


def test_typing_typeddict_works_with_strict_fields() -> None:
    seen: list[Any] = []

    def rate(movie: Movie, others: list[Movie] | None = None) -> str:
        """Rate a movie."""
        seen.append(movie)
        return movie["title"]

    t = tool(rate)
    movie_schema = t.parameters["$defs"]["Movie"]
    assert movie_schema["required"] == ["title", "year"]
    assert movie_schema["properties"]["year"] == {"title": "Year", "type": "integer"}
    assert movie_schema["description"] == "A film."
    args = t.validate({"movie": {"title": "Heat", "year": "1995"}})
    assert args["movie"] == {"title": "Heat", "year": 1995}
    assert type(args["movie"]) is dict
    asyncio.run(t.call(args, None))
    assert seen == [{"title": "Heat", "year": 1995}]
    text = _refused({"movie": {"title": "Heat", "year": True}}, t)
    assert "'movie.year'" in text
    _refused({"movie": {"title": "Heat", "year": 1}, "others": [{"title": 1, "year": 2}]}, t)


class Node(typing.TypedDict):
    name: str
    children: list[Node]


def test_recursive_typing_typeddict_is_refused_before_312() -> None:
    def walk(tree: Node) -> str:
        """Walk a tree."""
        return tree["name"]

    if sys.version_info >= (3, 12):
        t = tool(walk)
        assert t.validate({"tree": {"name": "a", "children": []}})["tree"]["name"] == "a"
        return
    with pytest.raises(UsageError) as info:
        tool(walk)
    assert "typing_extensions" in _one_sentence(info)


# ---------------------------------------------------------------------------------------
# 4. Descriptions from Annotated


def test_annotated_description_wins_over_the_docstring() -> None:
    @tool
    def search(
        query: Annotated[str, Field(description="What to look for.", min_length=2)],
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
        exact: bool = False,
    ) -> str:
        """Search.

        Args:
            query: Docstring words for query.
            limit: How many results.
            exact: Match exactly.
        """
        return query

    props = search.parameters["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for.", "minLength": 2}
    assert props["limit"] == {
        "type": "integer",
        "description": "How many results.",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
    }
    assert props["exact"]["description"] == "Match exactly."
    assert "'query'" in _refused({"query": "a"}, search)
    assert "'limit'" in _refused({"query": "ab", "limit": "51"}, search)
    assert search.validate({"query": "ab", "limit": "7"})["limit"] == 7


# ---------------------------------------------------------------------------------------
# 5. Booleans and numbers never pass for each other


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int


@tool
def everything(
    count: int,
    ratio: float,
    flag: bool,
    when: dt.date,
    at: dt.datetime,
    color: Color,
    mode: Literal["fast", "slow"],
    level: Literal[1, 2, 3],
    point: Point,
    tags: list[str],
    weights: dict[str, float],
    maybe: Optional[int] = None,  # noqa: UP045 (the old spelling is the one tested)
    either: int | str = 0,
    pair: tuple[int, bool] = (0, False),
) -> str:
    """Take every kind of argument."""
    return "ok"


GOOD = {
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "when": "2024-02-29",
    "at": "2024-02-29T12:30:00Z",
    "color": "red",
    "mode": "fast",
    "level": 2,
    "point": {"x": 1, "y": 2},
    "tags": ["a"],
    "weights": {"a": 1, "b": 0.5},
}


def test_json_inputs_still_validate() -> None:
    args = everything.validate({**GOOD, "maybe": None, "either": "x", "pair": [1, True]})
    assert args["when"] == dt.date(2024, 2, 29)
    assert args["at"] == dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC)
    assert args["color"] is Color.RED and args["point"] == Point(x=1, y=2)
    assert args["weights"] == {"a": 1.0, "b": 0.5} and args["pair"] == (1, True)
    assert args["maybe"] is None and args["either"] == "x"
    assert everything.validate({**GOOD, "either": 5})["either"] == 5
    assert everything.validate({**GOOD, "either": "42"})["either"] == "42"  # a str is a str


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", True),
        ("count", False),
        ("count", 2.5),
        ("count", "2.5"),
        ("count", "three"),
        ("count", " 3"),
        ("count", "0x10"),
        ("ratio", True),
        ("ratio", "NaN"),
        ("flag", 1),
        ("flag", 0),
        ("flag", "yes"),
        ("flag", "no"),
        ("flag", "true"),
        ("flag", "1"),
        ("flag", 1.0),
        ("level", True),
        ("level", "2"),
        ("tags", "a"),
        ("weights", {"a": True}),
        ("maybe", True),
        ("pair", [1, 1]),
        ("point", "x=1,y=2"),
    ],
)
def test_type_confusion_is_refused(field: str, value: Any) -> None:
    text = _refused({**GOOD, field: value}, everything)
    assert f"field '{field}" in text


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("count", "42", 42),
        ("count", "-7", -7),
        ("count", 4.0, 4),
        ("count", "4.0", 4),
        ("count", "1e3", 1000),
        ("ratio", "2.5", 2.5),
        ("ratio", "-1E-2", -0.01),
        ("ratio", 3, 3.0),
        ("maybe", "5", 5),
    ],
)
def test_json_number_strings_are_numbers(field: str, value: Any, expected: Any) -> None:
    got = everything.validate({**GOOD, field: value})[field]
    assert got == expected and type(got) is type(expected)


def test_nested_containers_are_strict() -> None:
    @tool
    def plot(points: list[tuple[float, float]], flags: dict[str, list[bool]]) -> str:
        """Plot."""
        return "ok"

    assert plot.validate({"points": [["1.5", 2]], "flags": {"a": [True]}})["points"] == [(1.5, 2.0)]
    assert "'points.0.1'" in _refused({"points": [[1, False]], "flags": {}}, plot)
    assert "'flags.a.0'" in _refused({"points": [], "flags": {"a": ["true"]}}, plot)


# ---------------------------------------------------------------------------------------
# 6. Parameter names pydantic cannot use as fields


def test_underscore_and_basemodel_names_are_aliased() -> None:
    seen: list[dict[str, Any]] = []

    def route(
        _from: str,
        to: str,
        schema: str = "s",
        json: int = 0,
        copy: bool = False,
        dict: str = "d",
        validate: str = "v",
        model_config: str = "c",
        model_name: str = "m",
    ) -> str:
        """Plan a route.

        Args:
            _from: Where to start.
        """
        seen.append(locals())
        return f"{_from}->{to}"

    t = tool(route)
    props = t.parameters["properties"]
    assert list(props) == [
        "_from",
        "to",
        "schema",
        "json",
        "copy",
        "dict",
        "validate",
        "model_config",
        "model_name",
    ]
    assert props["_from"] == {"type": "string", "description": "Where to start."}
    assert t.parameters["required"] == ["_from", "to"]
    args = t.validate({"_from": "A", "to": "B", "json": "3", "model_config": "x"})
    assert args["_from"] == "A" and args["json"] == 3 and args["model_config"] == "x"
    assert asyncio.run(t.call(args, None)) == "A->B"
    assert seen[0]["model_name"] == "m"
    text = _refused({"to": "B", "copy": "yes"}, t)
    assert "field '_from': Field required" in text and "field 'copy'" in text
    assert "aliased" not in text
    assert "unknown field" in _refused({"_from": "A", "to": "B", "aliased_0": "x"}, t)


# ---------------------------------------------------------------------------------------
# 7. Tools from a JSON schema


def _backends() -> list[str]:
    return [b for b in ("jsonschema_rs", "jsonschema") if importlib.util.find_spec(b)]


@pytest.fixture(params=["jsonschema_rs", "jsonschema"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    monkeypatch.setattr(schema_args, "_SCHEMA_BACKENDS", (name,))
    return name


WEATHER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "description": "City name."},
        "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
        "units": {"enum": ["metric", "imperial"]},
        "detailed": {"type": "boolean"},
        "at": {"$ref": "#/$defs/coords"},
        "hours": {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
    },
    "required": ["city"],
    "additionalProperties": False,
    "$defs": {
        "coords": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
        }
    },
    "if": {"properties": {"detailed": {"const": True}}, "required": ["detailed"]},
    "then": {"required": ["units"]},
}


def test_schema_tool_passes_the_schema_through_and_validates(backend: str) -> None:
    calls: list[dict[str, Any]] = []

    def forecast(**arguments: Any) -> str:
        calls.append(arguments)
        return "sunny"

    t = Tool.from_schema("forecast", "Weather forecast.", WEATHER, forecast, timeout=5)
    assert t.parameters == WEATHER and t.parameters is not WEATHER
    assert t.definition().parameters == WEATHER and t.timeout == 5
    args = t.validate({"city": "Oslo", "days": "5", "at": {"lat": 59.9, "lon": "10.7"}})
    assert args == {"city": "Oslo", "days": 5, "at": {"lat": 59.9, "lon": 10.7}}
    assert asyncio.run(t.call(args, None)) == "sunny" and calls == [args]
    assert t.validate({"city": "Oslo", "days": 2.0}) == {"city": "Oslo", "days": 2.0}


def test_schema_tool_errors_render_for_the_model(backend: str) -> None:
    t = tool_from_schema("forecast", "Weather forecast.", WEATHER, lambda **kw: kw)
    text = _refused({"days": True, "units": "kelvin", "zone": "x"}, t)
    assert text.startswith("ERROR: invalid arguments for tool 'forecast':")
    assert "- field 'city': Field required" in text
    assert "- field 'days': Input should be of type integer (got true)" in text
    assert '- field \'units\': Input should be one of "metric", "imperial"' in text
    assert "- field 'zone': unknown field (got \"x\")" in text
    assert "Expected arguments matching this JSON schema:" in text
    assert "'at.lat'" in _refused({"city": "x", "at": {"lat": "north", "lon": 1}}, t)
    assert "field 'hours" in _refused({"city": "x", "hours": [1, 2]}, t)
    assert "'units'" in _refused({"city": "x", "detailed": True}, t)  # if/then
    assert "'detailed'" in _refused({"city": "x", "detailed": "true"}, t)
    assert "'days'" in _refused({"city": "x", "days": "15"}, t)  # coerced, then too big


def test_schema_tool_with_context_and_async(backend: str) -> None:
    async def lookup(ctx: ToolContext[str], **arguments: Any) -> str:
        return f"{ctx.deps}:{arguments['q']}"

    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    t = Tool.from_schema("lookup", "", schema, lookup, takes_context=True)
    assert t.description == "lookup" and asyncio.iscoroutinefunction(t.function)
    ctx = ToolContext("run", "call", "lookup", 1, "deps")
    assert asyncio.run(t.call(t.validate({"q": "x"}), ctx)) == "deps:x"


def test_schema_tool_refusals(backend: str) -> None:
    def fn(**kw: Any) -> None:
        return None

    cases: list[tuple[Any, str]] = [
        ({"type": "object", "properties": {"a": {"type": "bogus"}}}, "not a valid JSON schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "valid JSON"),
        ({"type": "object", "properties": {"a": {"$ref": "https://x.test/a.json"}}}, "valid"),
        ({"type": "string"}, "type 'object'"),
        ([{"type": "object"}], "must be a JSON schema"),
    ]
    for schema, expected in cases:
        with pytest.raises(UsageError) as info:
            tool_from_schema("f", "F.", schema, fn)
        assert expected in _one_sentence(info), schema
    with pytest.raises(UsageError, match="callable"):
        tool_from_schema("f", "F.", {"type": "object"}, "not a function")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="1 to 64"):
        tool_from_schema("weather.get", "F.", {"type": "object"}, fn)


def test_schema_tool_without_any_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_args, "_SCHEMA_BACKENDS", ("no_such_validator_module",))
    with pytest.raises(UsageError) as info:
        tool_from_schema("f", "F.", {"type": "object"}, lambda: None)
    assert "pip install" in _one_sentence(info)


# ---------------------------------------------------------------------------------------
# 8. BFCL-style schemas (hand-written sample here; the real corpus below when installed)

_ALIASES = {
    "dict": "object",
    "hashmap": "object",
    "hashtable": "object",
    "float": "number",
    "double": "number",
    "tuple": "array",
    "list": "array",
    "arraylist": "array",
    "queue": "array",
    "stack": "array",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "bigint": "integer",
    "bool": "boolean",
    "char": "string",
}


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if not isinstance(kind, str) or kind.lower() in ("any", ""):
        return None
    return _ALIASES.get(kind.lower(), kind.lower())


def _example(schema: dict[str, Any]) -> Any:
    """A value the schema accepts (BFCL schemas use a small subset of JSON Schema)."""
    kind = _kind(schema)
    if schema.get("enum"):
        options = [o for o in schema["enum"] if _fits(kind, o)]
        if not options:
            raise _Unsatisfiable(schema)
        return options[0]
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        return {n: _example(props.get(n, {})) for n in names}
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            return []
        return [_example(items)] * max(1, schema.get("minItems", 1))
    return _scalar_example(kind, schema)


class _Unsatisfiable(Exception):
    """No value fits: the corpus has a few enums whose options contradict the type."""


_PYTHON_TYPES: dict[str, Any] = {
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "string": str,
    "array": list,
    "object": dict,
}


def _fits(kind: str | None, value: Any) -> bool:
    if kind is None or kind not in _PYTHON_TYPES:
        return True
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _PYTHON_TYPES[kind])


def _scalar_example(kind: str | None, schema: dict[str, Any]) -> Any:
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind in ("integer", "number"):
        value = low if low is not None else (high if high is not None else 1)
        return int(value) if kind == "integer" else float(value) + 0.0
    if kind == "boolean":
        return True
    return "x" * max(1, schema.get("minLength", 1))


_CONFUSION = {"integer": True, "number": False, "boolean": 1, "object": "{}", "array": "[]"}


def _confused(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(property, value) pairs of the wrong JSON type: bool for numbers, int for booleans,
    strings for objects and arrays."""
    for name, prop in (schema.get("properties") or {}).items():
        kind = _kind(prop) if isinstance(prop, dict) else None
        if kind in _CONFUSION and "enum" not in prop:
            yield name, _CONFUSION[kind]


def _check_function(function: dict[str, Any]) -> dict[str, int]:
    """Build the tool and check examples; counts of what was checked."""
    name = re.sub(r"\.", "_", function["name"])  # as BFCL itself does for these providers
    t = Tool.from_schema(name, function.get("description", ""), function["parameters"], _noop)
    assert t.parameters == function["parameters"]
    counts = {"valid": 0, "confused": 0, "unsatisfiable": 0}
    try:
        example = _example({**function["parameters"], "type": "dict"})
    except _Unsatisfiable:
        counts["unsatisfiable"] += 1
        return counts
    assert t.validate(example) == example, (name, example)
    counts["valid"] += 1
    for prop, wrong in _confused(function["parameters"]):
        with pytest.raises(ValidationError) as info:
            t.validate({**example, prop: wrong})
        assert f"field '{prop}'" in render_validation_error(t, info.value), (name, prop)
        counts["confused"] += 1
    return counts


def _noop(**arguments: Any) -> None:
    return None


BFCL_SAMPLE: list[dict[str, Any]] = [
    {
        "name": "calculate_triangle_area",
        "description": "Calculate the area of a triangle.",
        "parameters": {
            "type": "dict",
            "properties": {
                "base": {"type": "integer", "description": "The base."},
                "height": {"type": "integer", "description": "The height."},
                "unit": {"type": "string", "description": "Unit.", "default": "units"},
            },
            "required": ["base", "height"],
        },
    },
    {
        "name": "math.hypot",
        "description": "Euclidean norm.",
        "parameters": {
            "type": "dict",
            "properties": {"x": {"type": "float"}, "y": {"type": "float"}, "z": {"type": "float"}},
            "required": ["x", "y"],
        },
    },
    {
        "name": "absolute_value",
        "description": "Absolute value.",
        "parameters": {
            "type": "dict",
            "properties": {"number": {"type": "float", "description": "The number."}},
            "required": ["number"],
        },
    },
    {
        "name": "book_flight",
        "description": "Book a flight.",
        "parameters": {
            "type": "dict",
            "properties": {
                "from": {"type": "string"},
                "to": {"type": "string"},
                "class": {"type": "string", "enum": ["economy", "business", "first"]},
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
                "nonstop": {"type": "boolean", "default": False},
            },
            "required": ["from", "to", "class"],
        },
    },
    {
        "name": "plot_points",
        "description": "Plot points.",
        "parameters": {
            "type": "dict",
            "properties": {
                "points": {"type": "array", "items": {"type": "tuple", "items": {"type": "float"}}},
                "color": {"type": "string", "optional": True},
            },
            "required": ["points"],
        },
    },
    {
        "name": "update_user",
        "description": "Update a user.",
        "parameters": {
            "type": "dict",
            "properties": {
                "user_id": {"type": "integer"},
                "profile": {
                    "type": "dict",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"},
                        "emails": {"type": "array", "items": {"type": "string"}},
                        "settings": {"type": "dict", "properties": {"dark": {"type": "boolean"}}},
                    },
                    "required": ["name"],
                },
            },
            "required": ["user_id", "profile"],
        },
    },
    {
        "name": "requests.get",
        "description": "HTTP GET.",
        "parameters": {
            "type": "dict",
            "properties": {
                "url": {"type": "string"},
                "headers": {
                    "type": "dict",
                    "properties": {
                        "Content-Type": {"type": "string", "default": "application/json"},
                        "Accept": {"type": "string"},
                    },
                },
                "timeout": {"type": "float", "default": 5.0},
                "params": {"type": "dict", "properties": {}},
                "allow_redirects": {"type": "boolean", "default": True},
            },
            "required": ["url"],
        },
    },
    {
        "name": "remember",
        "description": "Store any value.",
        "parameters": {
            "type": "dict",
            "properties": {"key": {"type": "string"}, "value": {"type": "any"}},
            "required": ["key", "value"],
        },
    },
    {
        "name": "GeometryPresentation_createPresentation",
        "description": "Java: create a presentation.",
        "parameters": {
            "type": "dict",
            "properties": {
                "controller": {"type": "String", "description": "The controller."},
                "parentFrame": {"type": "HashMap", "description": "The parent frame."},
                "ids": {"type": "ArrayList", "items": {"type": "long"}},
                "visible": {"type": "Boolean"},
                "scale": {"type": "double"},
                "code": {"type": "char"},
            },
            "required": ["controller", "parentFrame"],
        },
    },
    {
        "name": "setState",
        "description": "JavaScript: set state.",
        "parameters": {
            "type": "dict",
            "properties": {
                "key": {"type": "String"},
                "count": {"type": "Bigint"},
                "items": {"type": "array", "items": {"type": "String"}},
                "options": {"type": "dict", "properties": {"deep": {"type": "Boolean"}}},
            },
            "required": ["key"],
        },
    },
    {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "dict",
            "required": ["location"],
            "properties": {
                "location": {"type": "string", "description": "City, e.g. 'Berkeley, CA'."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
        },
    },
    {
        "name": "sort_list",
        "description": "Sort a list.",
        "parameters": {
            "type": "dict",
            "properties": {
                "elements": {"type": "array", "items": {"type": "integer"}},
                "order": {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
            },
            "required": ["elements"],
        },
    },
    {
        "name": "no_arguments",
        "description": "Takes nothing.",
        "parameters": {"type": "dict", "properties": {}, "required": []},
    },
    {
        "name": "matrix_multiply",
        "description": "Multiply matrices.",
        "parameters": {
            "type": "dict",
            "properties": {
                "a": {"type": "array", "items": {"type": "array", "items": {"type": "float"}}},
                "b": {"type": "array", "items": {"type": "array", "items": {"type": "float"}}},
            },
            "required": ["a", "b"],
        },
    },
    {
        "name": "set_alarm",
        "description": "Set an alarm.",
        "parameters": {
            "type": "dict",
            "properties": {
                "time": {"type": "string", "description": "HH:MM"},
                "repeat": {"type": "boolean", "required": False},
                "days": {"type": "array", "items": {"type": "string", "enum": ["mon", "tue"]}},
                "volume": {"type": "integer", "minimum": 0, "maximum": 100, "default": 50},
            },
            "required": ["time"],
        },
    },
]


def test_bfcl_style_sample(backend: str) -> None:
    totals = {"valid": 0, "confused": 0, "unsatisfiable": 0}
    for function in BFCL_SAMPLE:
        for key, count in _check_function(function).items():
            totals[key] += count
    assert totals == {"valid": len(BFCL_SAMPLE), "confused": 28, "unsatisfiable": 0}


def _bfcl_data() -> Path | None:
    """The BFCL data folder: $LOOPWISE_BFCL_DATA, or the installed bfcl-eval package's."""
    given = os.environ.get("LOOPWISE_BFCL_DATA")
    if given:
        return Path(given)
    spec = importlib.util.find_spec("bfcl_eval")  # located, not imported (heavy imports)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _json_lines(path: Path) -> list[Any]:
    """The entries of a JSON-lines file; none for other files (BFCL ships a few configs)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except ValueError:
        return []


def _bfcl_functions(data: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(data.glob("BFCL_v*_*.json")) + sorted(data.glob("multi_turn_func_doc/*")):
        for entry in _json_lines(path):
            if "parameters" in entry:
                yield entry
            yield from entry.get("function") or []


@pytest.mark.slow
def test_bfcl_corpus(backend: str) -> None:
    data = _bfcl_data()
    if data is None or not data.is_dir():
        pytest.skip(
            "BFCL corpus not found: pip install --no-deps bfcl-eval==2026.3.23 "
            "(or set LOOPWISE_BFCL_DATA to its data folder)"
        )
    functions = list(_bfcl_functions(data))
    unique = {json.dumps(f, sort_keys=True): f for f in functions}
    dotted = {f["name"] for f in unique.values() if not re.fullmatch(r"[\w-]{1,64}", f["name"])}
    totals = {"valid": 0, "confused": 0, "unsatisfiable": 0}
    for function in unique.values():
        for key, count in _check_function(function).items():
            totals[key] += count
    for name in sorted(dotted)[:50]:
        with pytest.raises(UsageError, match="1 to 64"):
            Tool.from_schema(name, "", {"type": "object"}, _noop)
    print(  # shown with -s: the numbers the report quotes
        f"BFCL ({backend}): {len(functions)} function entries, {len(unique)} distinct, "
        f"{totals['valid']} valid examples accepted, {totals['confused']} confused refused, "
        f"{totals['unsatisfiable']} with an enum contradicting its type, "
        f"{len(dotted)} distinct names refused as given (dots)"
    )
    assert len(unique) > 1000 and totals["confused"] > 1000
    assert totals["unsatisfiable"] < len(unique) / 100
