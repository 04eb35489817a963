"""Tools from plain typed functions: schema from type hints, descriptions from the docstring.

``@tool`` turns a sync or async function into a :class:`Tool`. A parameter annotated with
:class:`ToolContext` is injected by the loop and never shown to the model. Arguments are
validated with pydantic; a bad call becomes an observation naming the field and what was
expected, so the model can correct itself.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    TypeAlias,
    TypeVar,
    cast,
    get_type_hints,
    overload,
)

from pydantic_core import PydanticUndefined, ValidationError, to_jsonable_python

from ._sync import SyncRunner, default_runner, tool_exit
from .errors import ModelRetry, UsageError
from .messages import ImagePart, ToolDefinition

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .scope import RunScope

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "render_output",
    "render_result",
    "tool",
]

DEFAULT_MAX_OUTPUT_CHARS = 20_000
DepsT = TypeVar("DepsT")
ApprovalRule: TypeAlias = "bool | Callable[[dict[str, Any]], bool]"


@dataclass(slots=True)
class ToolContext(Generic[DepsT]):
    """What a tool may know about the run that called it; injected, never model-visible.

    ``idempotency_key`` (``run_id:call_id``) is stable across retries and resumes: pass it
    to any side effect that supports one.
    """

    run_id: str
    call_id: str
    tool_name: str
    step: int
    deps: DepsT
    metadata: Mapping[str, Any] = field(default_factory=dict)
    approved: bool = False
    """True when a human approved this very call (the tool needed approval for these args)."""
    run: RunScope | None = None
    """The calling run as a parent (budget, cancel, events), for tools that start runs."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.call_id}"


class ToolFailed(Exception):
    """A tool error whose observation is already rendered: the model sees ``content`` verbatim.

    Used where a result was rendered elsewhere and is replayed (the durable engine's
    checkpointed tool steps), so the observation stays identical to the first run's.
    """

    def __init__(self, content: str):
        super().__init__(content)
        self.content = content


@cache
def _args_base() -> type[BaseModel]:
    """The base of every tool's argument model (pydantic is imported on first use)."""
    from pydantic import BaseModel, ConfigDict

    class ToolArguments(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    return ToolArguments


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A callable the model can use, with its schema, validator and execution policy.

    ``requires_approval`` stops the run for a human decision before the call runs; it may
    be a predicate on the validated arguments (approval only for some calls, e.g. writes
    that overwrite an existing file);
    ``timeout`` (seconds) bounds one call; ``max_output_chars`` bounds what the model sees;
    ``idempotent`` says a repeat (after a crash) is harmless.
    """

    name: str
    description: str
    function: Callable[..., Any]
    args_model: type[BaseModel]
    context_param: str | None = None
    requires_approval: ApprovalRule = False
    timeout: float | None = None
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    idempotent: bool = True
    _parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as the model sees it."""
        return self._parameters

    def definition(self) -> ToolDefinition:
        return ToolDefinition(
            name=self.name, description=self.description, parameters=self._parameters
        )

    def needs_approval(self, args: Mapping[str, Any]) -> bool:
        """Whether this call (with validated ``args``) must wait for a human decision.

        A predicate that raises counts as "needs approval": when unsure, ask.
        """
        rule = self.requires_approval
        if isinstance(rule, bool):
            return rule
        try:
            return bool(rule(dict(args)))
        except Exception:
            return True

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validate raw arguments; raises ``ValidationError`` with per-field errors."""
        model = self.args_model.model_validate(dict(args))
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def call(
        self, args: dict[str, Any], ctx: ToolContext[Any] | None, runner: SyncRunner | None = None
    ) -> Any:
        """Run the function with validated ``args`` within ``timeout``.

        A sync function runs on ``runner``'s threads (the process-wide default runner if
        none): a call that times out is abandoned, never waited for. ``SystemExit`` and
        ``KeyboardInterrupt`` raised by the tool come out as :class:`ToolExit`, an error.
        """
        kwargs = dict(args)
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        if not inspect.iscoroutinefunction(self.function):
            return await (runner or default_runner()).run(self.function, kwargs, self.timeout)
        coro = cast(Awaitable[Any], self.function(**kwargs))
        try:
            if self.timeout is None:
                return await coro
            async with asyncio.timeout(self.timeout):
                return await coro
        except (SystemExit, KeyboardInterrupt) as exc:
            raise tool_exit(exc) from exc


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: ApprovalRule = False,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    idempotent: bool = True,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: ApprovalRule = False,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    idempotent: bool = True,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a typed function; use bare (``@tool``) or with options."""

    def build(fn: Callable[..., Any]) -> Tool:
        return _build_tool(
            fn,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            max_output_chars=max_output_chars,
            idempotent=idempotent,
        )

    if function is not None:
        return build(function)
    return build


def _build_tool(
    fn: Callable[..., Any], *, name: str | None, description: str | None, **policy: Any
) -> Tool:
    from pydantic import Field, create_model

    summary, param_docs = _parse_docstring(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise UsageError(
            f"Tool {fn.__name__!r} has a type hint that cannot be resolved: {exc}"
        ) from None
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageError(f"Tool {fn.__name__!r} cannot take *args or **kwargs ({pname!r}).")
        annotation = hints.get(pname, Any)
        if _is_context(annotation):
            context_param = pname
            continue
        default = PydanticUndefined if param.default is param.empty else param.default
        fields[pname] = (annotation, Field(default, description=param_docs.get(pname)))
    tool_name = name or fn.__name__
    args_model = create_model(f"{tool_name}_args", __base__=_args_base(), **fields)
    schema = args_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return Tool(
        name=tool_name,
        description=description or summary or tool_name.replace("_", " "),
        function=fn,
        args_model=args_model,
        context_param=context_param,
        _parameters=schema,
        **policy,
    )


def _is_context(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    return annotation is ToolContext or origin is ToolContext


def _parse_docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(fn)
    if not doc:
        return "", {}
    import docstring_parser

    parsed = docstring_parser.parse(doc)
    parts = [p for p in (parsed.short_description, parsed.long_description) if p]
    params = {p.arg_name: p.description for p in parsed.params if p.description}
    return "\n\n".join(parts), params


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
