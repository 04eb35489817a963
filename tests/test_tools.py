"""Tools from plain functions: schemas, injection, limits, and rendering for the model."""

import asyncio

import pytest
from pydantic import BaseModel, ValidationError

from loopwise import ModelRetry, Tool, ToolContext, UsageError, tool
from loopwise.tools import render_exception, render_result


class Point(BaseModel):
    x: int
    y: int


@tool
def area(width: float, height: float = 1.0, unit: str = "m") -> str:
    """Compute the area of a rectangle.

    Args:
        width: Width of the rectangle.
        height: Height of the rectangle.
        unit: Unit of length.
    """
    return f"{width * height} {unit}2"


def test_schema_from_hints_and_docstring() -> None:
    assert area.name == "area"
    assert area.description == "Compute the area of a rectangle."
    assert area.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "width": {"type": "number", "description": "Width of the rectangle."},
            "height": {"type": "number", "default": 1.0, "description": "Height of the rectangle."},
            "unit": {"type": "string", "default": "m", "description": "Unit of length."},
        },
        "required": ["width"],
    }


def test_context_is_injected_and_hidden() -> None:
    seen: list[ToolContext[dict[str, str]]] = []

    @tool
    async def whoami(ctx: ToolContext[dict[str, str]], greeting: str) -> str:
        """Say who the caller is."""
        seen.append(ctx)
        return f"{greeting} {ctx.deps['user']}"

    assert "ctx" not in whoami.parameters["properties"]
    assert whoami.parameters["required"] == ["greeting"]
    ctx = ToolContext("run1", "call1", "whoami", 1, {"user": "ada"})
    out = asyncio.run(whoami.call({"greeting": "hi"}, ctx))
    assert out == "hi ada"
    assert seen[0].idempotency_key == "run1:call1"


def test_nested_model_arguments_validate() -> None:
    @tool
    def dist(p: Point) -> float:
        """Distance from the origin."""
        return float((p.x**2 + p.y**2) ** 0.5)

    args = dist.validate({"p": {"x": 3, "y": 4}})
    assert asyncio.run(dist.call(args, None)) == 5.0
    assert "$defs" in dist.parameters


def test_tool_options_and_errors() -> None:
    @tool(requires_approval=True, timeout=30, max_output_chars=10, idempotent=False)
    def delete_file(path: str) -> str:
        """Delete a file."""
        return path

    assert isinstance(delete_file, Tool)
    assert delete_file.requires_approval and delete_file.timeout == 30
    assert not delete_file.idempotent
    with pytest.raises(UsageError, match=r"\*args"):
        tool(lambda *a: a)


def test_timeout_applies_to_async_tools() -> None:
    @tool(timeout=0.05)
    async def slow() -> str:
        """Sleep."""
        await asyncio.sleep(5)
        return "done"

    with pytest.raises(TimeoutError):
        asyncio.run(slow.call({}, None))


def test_render_result_is_clean_and_bounded() -> None:
    assert render_result(None, 100) == "(the tool returned no output)"
    assert render_result("", 100) == "(the tool returned no output)"
    assert render_result({"a": [1, 2]}, 100) == '{"a": [1, 2]}'
    assert render_result(Point(x=1, y=2), 100) == '{"x":1,"y":2}'
    out = render_result("x" * 50, 10)
    assert out.startswith("x" * 10) and "[truncated: 40 more characters]" in out


def test_render_exception() -> None:
    text = render_exception("t", ValueError("bad path"))
    assert text.startswith("ERROR: ValueError: bad path.")
    assert "Hint:" in text
    assert render_exception("t", ModelRetry("use an absolute path")) == (
        "ERROR: use an absolute path"
    )


def test_annotated_constraints_reach_schema_and_validation() -> None:
    from typing import Annotated

    from pydantic import Field

    @tool
    def page(count: Annotated[int, Field(ge=1, le=200)] = 20) -> int:
        """Return a page.

        Args:
            count: How many entries.
        """
        return count

    prop = page.parameters["properties"]["count"]
    assert prop["minimum"] == 1 and prop["maximum"] == 200
    assert prop["description"] == "How many entries." and prop["default"] == 20
    assert page.validate({}) == {"count": 20}
    with pytest.raises(ValidationError):
        page.validate({"count": 500})
