"""Structured final answers.

With ``output_type=str`` the answer is the model's text when it stops calling tools. With
any other type the model is given a ``final_answer`` tool whose schema is the type's; an
answer that does not validate is sent back with the errors, a bounded number of times.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic_core import ValidationError

from .messages import ToolDefinition

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["FINAL_ANSWER_TOOL", "InvalidOutput", "OutputSpec"]

FINAL_ANSWER_TOOL = "final_answer"
T = TypeVar("T")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class InvalidOutput(Exception):
    """The model's answer does not match the output type; ``message`` is for the model."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OutputSpec(Generic[T]):
    """How answers of type ``T`` are asked for and checked."""

    def __init__(self, output_type: type[T]):
        self.output_type = output_type
        self.is_text = output_type is str
        from pydantic import TypeAdapter

        self._adapter: TypeAdapter[T] = TypeAdapter(output_type)
        self._wrapped = False
        self.tool: ToolDefinition | None = None
        if not self.is_text:
            schema, self._wrapped = _tool_parameters(self._adapter.json_schema())
            description = schema.pop("description", None) or ""
            schema.pop("title", None)
            self.tool = ToolDefinition(
                name=FINAL_ANSWER_TOOL,
                description=(
                    "Give your final answer. Call this once, alone, when the task is done. "
                    + description
                ).strip(),
                parameters=schema,
            )

    def parse_text(self, text: str) -> T:
        """The answer from plain text: as is for ``str``, else JSON (code fences allowed)."""
        if self.is_text:
            if not text.strip():
                raise InvalidOutput("Your answer was empty. Give a clear final answer.")
            return text  # type: ignore[return-value]
        body = text.strip()
        fence = _FENCE.match(body)
        if fence:
            body = fence.group(1)
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise InvalidOutput(
                f"Your final answer must be given by calling the {FINAL_ANSWER_TOOL!r} tool "
                "with arguments matching its schema, not as plain text."
            ) from None
        return self.parse_args(data if isinstance(data, dict) else {"result": data})

    def parse_args(self, args: dict[str, Any]) -> T:
        """The answer from the final-answer tool's arguments."""
        data: Any = args
        if self._wrapped:
            data = args.get("result", args)
        try:
            return self._adapter.validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise InvalidOutput(
                f"Your final answer does not match the required schema: {problems}. "
                f"Call {FINAL_ANSWER_TOOL!r} again with a corrected answer."
            ) from None

    def to_jsonable(self, value: Any) -> Any:
        """The answer as plain JSON data (for events and the ``--json`` output)."""
        return self._adapter.dump_python(value, mode="json")


def _tool_parameters(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A self-contained object schema for the tool (``$defs`` at its root, where the refs
    point), and whether the answer is wrapped under ``result`` (lists, unions, dicts, scalars)."""
    defs = schema.pop("$defs", None)
    target = _root_target(schema, defs)
    if target is not None:
        schema = {**target}
    wrapped = schema.get("type") != "object" or "properties" not in schema
    if wrapped:
        schema = {"type": "object", "properties": {"result": schema}, "required": ["result"]}
    if defs:
        schema["$defs"] = defs
    return schema, wrapped


def _root_target(schema: dict[str, Any], defs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object model a bare root ``{"$ref": "#/$defs/Name"}`` points at, if it is one."""
    ref = schema.get("$ref")
    if not defs or not isinstance(ref, str) or len(schema) != 1:
        return None
    target = defs.get(ref.removeprefix("#/$defs/")) if ref.startswith("#/$defs/") else None
    if isinstance(target, dict) and target.get("type") == "object" and "properties" in target:
        return target
    return None
