"""Rendering tool results and errors for the model: text and images, bounded; exceptions
and validation errors as one observation the model can act on."""

from __future__ import annotations

import json
from typing import (
    TYPE_CHECKING,
    Any,
)

from pydantic_core import ValidationError, to_jsonable_python

from .errors import ModelRetry
from .messages import ImagePart

if TYPE_CHECKING:
    from .tools import Tool


class ToolFailed(Exception):
    """A tool error whose observation is already rendered: the model sees ``content`` verbatim.

    Used where a result was rendered elsewhere and is replayed (the durable engine's
    checkpointed tool steps), so the observation stays identical to the first run's.
    """

    def __init__(self, content: str):
        super().__init__(content)
        self.content = content


# ---------------------------------------------------------------------------------------
# Rendering results and errors for the model


MAX_RESULT_IMAGES = 8


def _images_in(value: Any) -> tuple[list[Any], tuple[ImagePart, ...]] | None:
    """A result's other items and its images, when it is an image or a list holding some."""
    items = [value] if isinstance(value, ImagePart) else value
    if not isinstance(items, (list, tuple)) or not any(isinstance(v, ImagePart) for v in items):
        return None
    images = tuple(v for v in items if isinstance(v, ImagePart))
    return [v for v in items if not isinstance(v, ImagePart)], images


def render_output(value: Any, max_chars: int) -> tuple[str, tuple[ImagePart, ...]]:
    """Text and images for the model: a tool may return an ``ImagePart`` or a list mixing
    text and images (at most ``MAX_RESULT_IMAGES`` are kept)."""
    split = _images_in(value)
    if split is None:
        return render_result(value, max_chars), ()
    others, images = split
    text = "\n".join(render_result(v, max_chars) for v in others)
    if not text:
        text = f"(the tool returned {len(images)} image{'s' if len(images) > 1 else ''})"
    if len(images) > MAX_RESULT_IMAGES:
        text += f"\n[{len(images) - MAX_RESULT_IMAGES} more images left out]"
        images = images[:MAX_RESULT_IMAGES]
    return truncate(text, max_chars), images


def render_result(value: Any, max_chars: int) -> str:
    """Clean text for the model: strings as they are, other values as JSON, bounded.

    Images are named, not inlined (:func:`render_output` keeps them).
    """
    split = _images_in(value)
    if split is not None:
        text, images = render_output(value, max_chars)
        return truncate(f"{text}\n[{len(images)} image(s) not kept in this text]", max_chars)
    if value is None or value == "":
        return "(the tool returned no output)"
    if isinstance(value, str):
        text = value
    elif hasattr(type(value), "model_fields") and hasattr(value, "model_dump_json"):
        text = value.model_dump_json()
    else:
        try:
            text = json.dumps(to_jsonable_python(value), ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
    return truncate(text, max_chars)


def truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    omitted = len(text) - max_chars
    return f"{text[:max_chars]}\n... [truncated: {omitted} more characters]"


def render_exception(tool_name: str, exc: BaseException) -> str:
    """``ERROR: <Type>: <message>`` plus a hint; a ``ModelRetry`` is shown as its message."""
    if isinstance(exc, ToolFailed):
        return exc.content
    if isinstance(exc, ModelRetry):
        return f"ERROR: {exc.message}"
    if isinstance(exc, TimeoutError):
        return (
            f"ERROR: TimeoutError: tool {tool_name!r} did not finish in time. "
            "Hint: try a smaller request or another approach."
        )
    message = str(exc) or "(no message)"
    return (
        f"ERROR: {type(exc).__name__}: {message}. "
        "Hint: check the arguments, or try another way to reach the goal."
    )


def render_validation_error(tool: Tool, exc: ValidationError) -> str:
    """Name the tool, each bad field and what was expected, then the schema."""
    lines = [f"ERROR: invalid arguments for tool {tool.name!r}:"]
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        got = ""
        if err["type"] not in ("missing",):
            got = f" (got {json.dumps(err.get('input'), default=str)[:100]})"
        if err["type"] == "extra_forbidden":
            lines.append(f"- field {where!r}: unknown field{got}")
        else:
            lines.append(f"- field {where!r}: {err['msg']}{got}")
    schema = json.dumps(tool.parameters, separators=(",", ":"))
    lines.append(f"Expected arguments matching this JSON schema: {truncate(schema, 2000)}")
    lines.append("Call the tool again with corrected arguments.")
    return "\n".join(lines)
