"""Every output type pydantic validates gives a final-answer tool with a self-contained schema.

The tool's parameters are an object schema whose ``$ref``s all resolve from its own root
(``$defs`` kept there), and a scripted call with matching arguments yields the right type.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call
from loopwise.output import FINAL_ANSWER_TOOL, OutputSpec


class Point(BaseModel):
    x: int


class Shape(BaseModel):
    """A shape with a corner."""

    corner: Point


class Label(BaseModel):
    text: str


class Tree(BaseModel):
    """A tree of numbers."""

    value: int
    children: list[Tree] = []


class Row(TypedDict):
    name: str
    at: Point


@dataclasses.dataclass
class Pair:
    left: int
    right: int


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


def _is_shape(value: Any) -> bool:
    return isinstance(value, Shape) and value.corner == Point(x=1)


# (output type, final-answer arguments, check on the parsed output)
CASES: list[tuple[Any, dict[str, Any], Any]] = [
    (Point, {"x": 3}, lambda v: v == Point(x=3)),
    (Shape, {"corner": {"x": 1}}, _is_shape),
    (list[Shape], {"result": [{"corner": {"x": 1}}]}, lambda v: _is_shape(v[0])),
    (Shape | Label, {"result": {"text": "hi"}}, lambda v: v == Label(text="hi")),
    (dict[str, Shape], {"result": {"a": {"corner": {"x": 1}}}}, lambda v: _is_shape(v["a"])),
    (Optional[Shape], {"result": {"corner": {"x": 1}}}, _is_shape),  # noqa: UP045
    (Tree, {"value": 1, "children": [{"value": 2}]}, lambda v: v.children[0].value == 2),
    (list[Tree], {"result": [{"value": 1}]}, lambda v: v == [Tree(value=1)]),
    (Row, {"name": "n", "at": {"x": 1}}, lambda v: v["at"] == Point(x=1)),
    (Pair, {"left": 1, "right": 2}, lambda v: v == Pair(1, 2)),
    (int, {"result": 7}, lambda v: v == 7),
    (Colour, {"result": "blue"}, lambda v: v is Colour.BLUE),
    (Literal["yes", "no"], {"result": "no"}, lambda v: v == "no"),
]
IDS = [
    "model",
    "nested",
    "list",
    "union",
    "dict",
    "optional",
    "recursive",
    "recursive-list",
    "typeddict",
    "dataclass",
    "int",
    "str-enum",
    "literal",
]


def _refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path, value
            else:
                yield from _refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{path}/{i}")


def _resolve(root: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer ref (``#/a/b``) looked up from ``root``; KeyError if dangling."""
    assert ref.startswith("#"), f"not a local ref: {ref}"
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _nested_defs(node: Any, path: str = "#") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$defs", "definitions") and path != "#":
                yield f"{path}/{key}"
            yield from _nested_defs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nested_defs(value, f"{path}/{i}")


@pytest.mark.parametrize(("output_type", "args", "check"), CASES, ids=IDS)
def test_final_answer_schema_is_self_contained(output_type: Any, args: Any, check: Any) -> None:
    tool = OutputSpec(output_type).tool
    assert tool is not None and tool.name == FINAL_ANSWER_TOOL
    params = tool.parameters
    assert params["type"] == "object" and isinstance(params["properties"], dict)
    for where, ref in _refs(params):
        try:
            target = _resolve(params, ref)
        except KeyError:
            pytest.fail(f"{ref} at {where} does not resolve from the tool's parameters")
        assert isinstance(target, dict), f"{ref} at {where} is not a schema"
    assert list(_nested_defs(params)) == []  # $defs only at the root, where refs point


@pytest.mark.parametrize(("output_type", "args", "check"), CASES, ids=IDS)
def test_scripted_final_answer_parses_to_the_type(output_type: Any, args: Any, check: Any) -> None:
    model = ScriptedModel([call(FINAL_ANSWER_TOOL, **args)])
    result = Agent(model, output_type=output_type).run_sync("answer")
    assert result.status == "completed", result.error
    assert check(result.output), result.output


@pytest.mark.parametrize(("output_type", "args", "check"), CASES, ids=IDS)
def test_answer_arguments_validate_against_the_schema(
    output_type: Any, args: Any, check: Any
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    tool = OutputSpec(output_type).tool
    assert tool is not None
    jsonschema_rs.validate(tool.parameters, args)  # raises on a dangling ref or a mismatch


def test_recursive_model_is_the_tool_itself_and_keeps_its_description() -> None:
    tool = OutputSpec(Tree).tool
    assert tool is not None
    assert set(tool.parameters["properties"]) == {"value", "children"}  # not under "result"
    assert tool.parameters["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert "A tree of numbers." in tool.description
