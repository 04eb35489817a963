"""Tools from plain typed functions: schema from type hints, descriptions from the docstring.

``@tool`` turns a sync or async function into a :class:`Tool`. A parameter annotated with
:class:`ToolContext` is injected by the loop and never shown to the model. Arguments are
validated with pydantic; a bad call becomes an observation naming the field and what was
expected, so the model can correct itself. :func:`tool_from_schema` (``Tool.from_schema``)
makes a tool from a JSON schema instead (MCP servers, other frameworks' tools).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    TypeAlias,
    TypeVar,
    cast,
    get_origin,
    overload,
)

from pydantic_core import PydanticUndefined

from ._render import (
    MAX_RESULT_IMAGES,
    ToolFailed,
    render_exception,
    render_output,
    render_result,
    render_validation_error,
    truncate,
)
from ._schema_args import _schema_check
from ._signature import (
    _checked_name,
    _default_name,
    _innermost,
    _parameters,
    _parse_docstring,
    _refuse_builtin,
    _type_hints,
)
from ._strict_args import _strict_types
from ._sync import SyncRunner, default_runner, tool_exit
from .errors import UsageError
from .messages import ToolDefinition

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .scope import RunScope

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "EFFECTS",
    "MAX_RESULT_IMAGES",
    "ApprovalRule",
    "Effect",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "render_exception",
    "render_output",
    "render_result",
    "render_validation_error",
    "tool",
    "tool_from_schema",
    "truncate",
]

DEFAULT_MAX_OUTPUT_CHARS = 20_000
Effect: TypeAlias = Literal["read", "write", "egress", "external", "irreversible"]
EFFECTS: tuple[Effect, ...] = ("read", "write", "egress", "external", "irreversible")
DepsT = TypeVar("DepsT")
ApprovalRule: TypeAlias = "bool | Callable[[dict[str, Any]], bool]"
ArgsCheck: TypeAlias = "Callable[[Mapping[str, Any]], dict[str, Any]]"
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


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
    tainted: bool = False
    """Untrusted content (an untrusted tool's output, an untrusted memory) had entered the
    run's context before this call: its arguments may have been steered by it."""
    untrusted: tuple[str, ...] | None = None
    """The run's ``RunState.untrusted`` when the model made this call (``None``: not told)."""
    taint: Callable[[str], None] | None = None
    """Record that untrusted content from a source entered the run (for a tool whose output
    is only as trusted as what it returns, e.g. recalled memories)."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.call_id}"


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
    ``idempotent`` says a repeat (after a crash) is harmless. ``trusted`` says the tool's
    output cannot carry instructions from a third party (a calculator's can't; a web page's,
    a file's or an email's can): an untrusted result taints the run (``RunState.untrusted``),
    which policies read. ``effects`` declares what a call may do: ``read``, ``write``
    (the workspace), ``egress`` (sends data out), ``external`` (a side effect elsewhere),
    ``irreversible``; empty means undeclared.
    """

    name: str
    description: str
    function: Callable[..., Any]
    args_model: type[BaseModel] | None
    context_param: str | None = None
    requires_approval: ApprovalRule = False
    timeout: float | None = None
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    idempotent: bool = True
    trusted: bool = False
    effects: frozenset[Effect] = frozenset()
    _parameters: dict[str, Any] = field(default_factory=dict, repr=False)
    _check: ArgsCheck | None = field(default=None, repr=False)

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        function: Callable[..., Any],
        *,
        takes_context: bool = False,
        **policy: Any,
    ) -> Tool:
        """A tool whose arguments are described by a JSON schema: see :func:`tool_from_schema`."""
        return tool_from_schema(
            name, description, parameters, function, takes_context=takes_context, **policy
        )

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
        """Validate raw arguments; raises ``ValidationError`` with per-field errors.

        Booleans and numbers never pass for each other (``true`` is no integer, ``1`` or
        ``"yes"`` no boolean); for an integer or number a string that is exactly a JSON
        number (``"42"``, ``"2.5"``) is accepted, and for an integer an integral float too.
        Nested pydantic models and dataclasses validate by their own configuration.
        """
        if self._check is not None:
            return self._check(args)
        if self.args_model is None:
            raise UsageError(f"Tool {self.name!r} has neither an args_model nor a schema check.")
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
    trusted: bool = False,
    effects: Iterable[Effect] = (),
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
    trusted: bool = False,
    effects: Iterable[Effect] = (),
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a typed function; use bare (``@tool``) or with options.

    Positional-only parameters are passed by position. A ``functools.partial`` is named and
    described by the function it wraps, without the arguments it binds. A parameter named
    ``_x`` or like a ``BaseModel`` attribute (``json``, ``copy``) keeps its name (aliased).
    A ``TypedDict`` is rebuilt as a ``typing_extensions.TypedDict`` (which pydantic needs
    before Python 3.12) with strict scalars; the function still gets a plain dict. Refused
    with a ``UsageError``: builtins (no type hints: wrap them in a typed def), ``*args``,
    ``**kwargs``, names outside ``[a-zA-Z0-9_-]{1,64}`` and ``final_answer`` (reserved).
    """

    def build(fn: Callable[..., Any]) -> Tool:
        return _build_tool(
            fn,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            max_output_chars=max_output_chars,
            idempotent=idempotent,
            trusted=trusted,
            effects=_effects(effects),
        )

    if function is not None:
        return build(function)
    return build


class _ArgsSpec(NamedTuple):
    """What a function's signature gives: the argument model and how to call the function."""

    model: type[BaseModel]
    schema: dict[str, Any]
    names: tuple[tuple[str, str], ...]
    """(model field, parameter name) pairs; they differ for aliased parameters."""
    context_param: str | None
    positional: tuple[str, ...]


def _build_tool(
    fn: Callable[..., Any], *, name: str | None, description: str | None, **policy: Any
) -> Tool:
    target = _innermost(fn)
    _refuse_builtin(target)
    params = _parameters(fn, name or getattr(target, "__name__", None) or repr(fn))
    tool_name = _checked_name(name or _default_name(fn, target))
    source = target if inspect.isclass(target) else _call_target(target)
    summary, param_docs = _parse_docstring(source if source.__doc__ else target)
    spec = _args_spec(tool_name, params, _type_hints(source, tool_name), param_docs)
    return Tool(
        name=tool_name,
        description=description or summary or tool_name.replace("_", " "),
        function=_call_adapter(fn, spec.positional, source),
        args_model=spec.model,
        context_param=spec.context_param,
        _parameters=spec.schema,
        _check=_model_check(spec.model, spec.names),
        **policy,
    )


def _args_spec(
    tool_name: str,
    params: list[inspect.Parameter],
    hints: dict[str, Any],
    param_docs: dict[str, str],
) -> _ArgsSpec:
    fields: dict[str, Any] = {}
    names: list[tuple[str, str]] = []
    context_param: str | None = None
    taken = {p.name for p in params}
    memo: dict[Any, Any] = {}
    for index, param in enumerate(params):
        annotation = hints.get(param.name, Any)
        if _is_context(annotation):
            context_param = param.name
            continue
        key = _field_key(param.name, index, taken)
        info = _field_info(param, annotation, param_docs.get(param.name), key)
        fields[key] = (_strict_types(annotation, memo), info)
        names.append((key, param.name))
    model, schema = _args_model(tool_name, fields)
    positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_ONLY)
    return _ArgsSpec(model, schema, tuple(names), context_param, positional)


def _field_key(pname: str, index: int, taken: set[str]) -> str:
    """The model field for a parameter: its own name, unless pydantic cannot use it.

    Names with a leading underscore (private to pydantic) or that shadow a ``BaseModel``
    attribute (``json``, ``copy``, ``model_config``...) get another field, aliased.
    """
    if not (pname.startswith(("_", "model_")) or hasattr(_args_base(), pname)):
        return pname
    key = f"aliased_{index}"
    while key in taken:
        key += "_"
    taken.add(key)
    return key


def _field_info(param: inspect.Parameter, annotation: Any, doc: str | None, key: str) -> Any:
    """The parameter's default, alias and docstring description (unless annotated with one)."""
    from pydantic import Field

    extra: dict[str, Any] = {}
    if doc and not _has_description(annotation):
        extra["description"] = doc
    if key != param.name:
        extra["alias"] = param.name
    default = PydanticUndefined if param.default is param.empty else param.default
    return Field(default, **extra)


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(getattr(meta, "description", None) for meta in annotation.__metadata__)


def _args_model(tool_name: str, fields: dict[str, Any]) -> tuple[type[BaseModel], dict[str, Any]]:
    """The arguments' model and its JSON schema, as the model sees it (no titles)."""
    from pydantic import PydanticUserError, create_model

    try:
        model = create_model(f"{tool_name}_args", __base__=_args_base(), **fields)
        schema = model.model_json_schema()
    except PydanticUserError as exc:
        reason = str(exc).splitlines()[0]
        raise UsageError(
            f"Tool {tool_name!r} has an argument pydantic cannot use: {reason}"
        ) from None
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return model, schema


def _model_check(model: type[BaseModel], names: tuple[tuple[str, str], ...]) -> ArgsCheck:
    """Validation against the model, giving the values by parameter name."""
    validate = model.model_validate

    def check(args: Mapping[str, Any]) -> dict[str, Any]:
        values = validate(dict(args)).__dict__
        return {pname: values[key] for key, pname in names}

    return check


def _call_adapter(
    fn: Callable[..., Any], positional: tuple[str, ...], like: Any
) -> Callable[..., Any]:
    """``fn`` itself, or a wrapper that passes ``positional`` by position (in that order)
    and is a coroutine function when ``fn`` is async (an async callable object)."""
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(like)
    if not positional and is_async == inspect.iscoroutinefunction(fn):
        return fn

    def split(kwargs: dict[str, Any]) -> list[Any]:
        args: list[Any] = []
        for pname in positional:
            if pname not in kwargs:
                break
            args.append(kwargs.pop(pname))
        return args

    async def call_async(**kwargs: Any) -> Any:
        args = split(kwargs)
        return await fn(*args, **kwargs)

    def call_sync(**kwargs: Any) -> Any:
        args = split(kwargs)
        return fn(*args, **kwargs)

    wrapper = call_async if is_async else call_sync
    functools.update_wrapper(wrapper, like, updated=())
    return wrapper


def _is_context(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    return annotation is ToolContext or origin is ToolContext


# ---------------------------------------------------------------------------------------
# Tools from a JSON schema


def tool_from_schema(
    name: str,
    description: str,
    parameters: Mapping[str, Any],
    function: Callable[..., Any],
    *,
    takes_context: bool = False,
    requires_approval: ApprovalRule = False,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    idempotent: bool = True,
    trusted: bool = False,
    effects: Iterable[Effect] = (),
) -> Tool:
    """A tool described by a JSON schema (an MCP server's, another framework's tool).

    The model sees ``parameters`` unchanged; arguments are checked against it (``dict``,
    ``float``, ``tuple``, ``any``... read as JSON types) before ``function(**arguments)``
    runs, or ``function(ctx, **arguments)`` with ``takes_context``. Validated arguments are
    those given (no defaults filled in), with JSON-number strings read as numbers where the
    schema wants one. Needs ``jsonschema-rs`` or ``jsonschema``.
    """
    tool_name = _checked_name(name)
    if not callable(function):
        raise UsageError(f"Tool {tool_name!r}: function must be callable, not {function!r}.")
    if not isinstance(parameters, Mapping):
        raise UsageError(
            f"Tool {tool_name!r}: parameters must be a JSON schema (a dict), not {parameters!r}."
        )
    schema = copy.deepcopy(dict(parameters))
    check = _schema_check(tool_name, schema)
    positional = (_CONTEXT_KEY,) if takes_context else ()
    return Tool(
        name=tool_name,
        description=description or tool_name.replace("_", " "),
        function=_call_adapter(function, positional, _call_target(function)),
        args_model=None,
        context_param=_CONTEXT_KEY if takes_context else None,
        requires_approval=requires_approval,
        timeout=timeout,
        max_output_chars=max_output_chars,
        idempotent=idempotent,
        trusted=trusted,
        effects=_effects(effects),
        _parameters=schema,
        _check=check,
    )


def _effects(effects: Iterable[str]) -> frozenset[Effect]:
    """The declared effects, each one of :data:`EFFECTS` (anything else is a UsageError)."""
    found = frozenset(effects)
    unknown = sorted(found - set(EFFECTS))
    if unknown:
        raise UsageError(f"Unknown tool effect(s) {unknown}; use some of {list(EFFECTS)}.")
    return found  # type: ignore[return-value]


def _call_target(function: Callable[..., Any]) -> Any:
    """What is really called: the function, or a callable object's ``__call__``."""
    return function if inspect.isroutine(function) else cast(Any, function).__call__


_CONTEXT_KEY = "__loopwise_context__"
