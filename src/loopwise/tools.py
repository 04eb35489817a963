"""Tools from plain typed functions: schema from type hints, descriptions from the docstring.

``@tool`` turns a sync or async function into a :class:`Tool`. A parameter annotated with
:class:`ToolContext` is injected by the loop and never shown to the model. Arguments are
validated with pydantic; a bad call becomes an observation naming the field and what was
expected, so the model can correct itself. :func:`tool_from_schema` (``Tool.from_schema``)
makes a tool from a JSON schema instead (MCP servers, other frameworks' tools).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc as cabc
import copy
import functools
import importlib
import inspect
import json
import re
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
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
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from pydantic_core import PydanticUndefined, ValidationError, to_jsonable_python

from ._sync import SyncRunner, default_runner, tool_exit
from .errors import ModelRetry, UsageError
from .messages import ImagePart, ToolDefinition
from .output import FINAL_ANSWER_TOOL

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .scope import RunScope

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "EFFECTS",
    "Effect",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "render_output",
    "render_result",
    "tool",
    "tool_from_schema",
]

DEFAULT_MAX_OUTPUT_CHARS = 20_000
Effect: TypeAlias = Literal["read", "write", "egress", "external", "irreversible"]
EFFECTS: tuple[Effect, ...] = ("read", "write", "egress", "external", "irreversible")
DepsT = TypeVar("DepsT")
ApprovalRule: TypeAlias = "bool | Callable[[dict[str, Any]], bool]"
ArgsCheck: TypeAlias = "Callable[[Mapping[str, Any]], dict[str, Any]]"
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
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


def _checked_name(name: str) -> str:
    """``name`` if providers accept it and it is not reserved; a ``UsageError`` otherwise."""
    if name == FINAL_ANSWER_TOOL:
        raise UsageError(
            f"The tool name {name!r} is reserved for the structured-output tool, "
            "so pass another name= (e.g. name='submit_answer')."
        )
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        hint = re.sub(r"[^a-zA-Z0-9_-]+", "_", str(name)).strip("_")[:64] or "my_tool"
        raise UsageError(
            f"Tool name {name!r} is not allowed: providers require 1 to 64 ASCII letters, "
            f"digits, '_' or '-', so pass a valid name= (e.g. name={hint!r})."
        )
    return name


def _innermost(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function under any ``functools.partial`` layers."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


_BUILTIN_TYPES = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def _refuse_builtin(target: Callable[..., Any]) -> None:
    """Builtins (``math.sqrt``, ``len``) have no type hints to make a schema from."""
    if isinstance(target, _BUILTIN_TYPES):
        label = getattr(target, "__name__", "builtin")
        raise UsageError(
            f"Cannot make a tool from the builtin {label!r}, which has no type hints: wrap it "
            f"in a typed def (e.g. def {label}(x: float) -> float: ...) and pass that."
        )


def _default_name(fn: Callable[..., Any], target: Callable[..., Any]) -> str:
    """The function's ``__name__`` (the wrapped function's, for a partial)."""
    found = getattr(target if isinstance(fn, functools.partial) else fn, "__name__", None)
    if not isinstance(found, str):
        raise UsageError(
            f"{fn!r} has no __name__ to name the tool by, so pass name= "
            "(e.g. tool(name='lookup')(fn))."
        )
    return found


def _parameters(fn: Callable[..., Any], label: str) -> list[inspect.Parameter]:
    """The parameters the model may fill: those a partial binds by keyword are left out."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise UsageError(
            f"Cannot make a tool from {label!r}: its signature cannot be inspected, "
            "so wrap it in a typed def and pass that."
        ) from None
    bound = set(fn.keywords) if isinstance(fn, functools.partial) else set()
    params = [p for p in signature.parameters.values() if p.name not in bound]
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UsageError(f"Tool {label!r} cannot take *args or **kwargs ({p.name!r}).")
    return params


def _type_hints(source: Callable[..., Any], tool_name: str) -> dict[str, Any]:
    try:
        return get_type_hints(source, include_extras=True)
    except NameError as exc:
        raise UsageError(
            f"Tool {tool_name!r} has a type hint that cannot be resolved: {exc}"
        ) from None
    except TypeError as exc:
        raise UsageError(
            f"Tool {tool_name!r}: its type hints cannot be read ({exc}), "
            "so wrap it in a typed def and pass that."
        ) from None


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
# Strict scalars: booleans and numbers never pass for each other


def _int_input(value: Any) -> Any:
    """A JSON-number string or an integral float as an int; anything else unchanged."""
    if isinstance(value, str):
        number = _json_int(value)
        return value if number is None else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _float_input(value: Any) -> Any:
    """A JSON-number string as a float; anything else unchanged."""
    if isinstance(value, str) and _JSON_NUMBER.fullmatch(value):
        return float(value)
    return value


def _json_int(text: str) -> int | None:
    """The integer ``text`` spells as a JSON number (``"42"``, ``"4.2e1"``), else None."""
    if not _JSON_NUMBER.fullmatch(text):
        return None
    if not any(c in text for c in ".eE"):
        return int(text)
    number = float(text)
    return int(number) if number.is_integer() else None


def _json_float(text: str) -> float | None:
    return float(text) if _JSON_NUMBER.fullmatch(text) else None


@cache
def _strict_scalars() -> dict[type, tuple[Any, ...]]:
    """Metadata making each scalar strict: ``Strict()`` first, then any constraints given
    with the type, then the validator reading JSON-number strings (constraints still apply)."""
    from pydantic import BeforeValidator, Strict

    return {
        bool: (Strict(),),
        int: (Strict(), BeforeValidator(_int_input)),
        float: (Strict(), BeforeValidator(_float_input)),
    }


def _strict_scalar(tp: type, constraints: tuple[Any, ...], readers: bool) -> Any:
    strict, *validators = _strict_scalars()[tp]
    return cast(Any, Annotated)[(tp, strict, *constraints, *(validators if readers else ()))]


def _is_scalar_or_none(tp: Any) -> bool:
    base = get_args(tp)[0] if get_origin(tp) is Annotated else tp
    return base in (bool, int, float, type(None))


_CONTAINERS = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        dict,
        collections.deque,
        cabc.Sequence,
        cabc.MutableSequence,
        cabc.Mapping,
        cabc.MutableMapping,
        cabc.Set,
        cabc.MutableSet,
    }
)


def _strict_types(tp: Any, memo: dict[Any, Any], readers: bool = True) -> Any:
    """``tp`` with ``bool``/``int``/``float`` made strict, through containers, unions,
    ``Annotated``, ``Literal`` and TypedDicts (nested models keep their own rules).

    Numbers are read from JSON-number strings (``readers``) unless a union offers another
    type that a string may be (``int | str`` keeps ``"42"`` a string).
    """
    if tp is bool or tp is int or tp is float:
        return _strict_scalar(tp, (), readers)
    if _is_typeddict(tp):
        return _typeddict_for_pydantic(tp, memo)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated and args[0] in (bool, int, float):
        return _strict_scalar(args[0], args[1:], readers)
    if origin is Annotated:
        return cast(Any, Annotated)[(_strict_types(args[0], memo, readers), *args[1:])]
    if origin is Literal:
        return _guarded_literal(tp, args)
    if origin is Union or origin is types.UnionType:
        readers = all(_is_scalar_or_none(a) for a in args)
        return cast(Any, Union)[tuple(_strict_types(a, memo, readers) for a in args)]
    if origin in _CONTAINERS and args:
        return origin[tuple(a if a is Ellipsis else _strict_types(a, memo) for a in args)]
    return tp


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "other"


def _guarded_literal(tp: Any, values: tuple[Any, ...]) -> Any:
    """A ``Literal`` of numbers or booleans that refuses the other kind (``True`` for 1)."""
    kinds = {_json_kind(v) for v in values}
    if kinds == {"other"}:
        return tp
    from pydantic import BeforeValidator
    from pydantic_core import PydanticCustomError

    expected = " or ".join(repr(v) for v in values)

    def guard(value: Any) -> Any:
        kind = _json_kind(value)
        if kind != "other" and kind not in kinds:
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return value

    return Annotated[tp, BeforeValidator(guard)]


def _is_typeddict(tp: Any) -> bool:
    import typing_extensions

    return isinstance(tp, type) and typing_extensions.is_typeddict(tp)


class _RecursiveTypedDict(Exception):
    """A TypedDict refers to itself (found while rebuilding it)."""


def _typeddict_for_pydantic(td: type, memo: dict[Any, Any]) -> Any:
    """A ``typing_extensions.TypedDict`` copy of ``td`` with strict scalars.

    pydantic refuses ``typing.TypedDict`` before Python 3.12; the copy works everywhere and
    the function still receives a plain dict. A recursive one is left as it is where
    pydantic supports it, and refused where it does not.
    """
    if td in memo:
        if memo[td] is None:
            raise _RecursiveTypedDict
        return memo[td]
    memo[td] = None
    try:
        memo[td] = _rebuilt_typeddict(td, memo)
    except _RecursiveTypedDict:
        if type(td).__module__ == "typing" and sys.version_info < (3, 12):
            raise UsageError(
                f"typing.TypedDict {td.__name__!r} refers to itself, which pydantic supports "
                "before Python 3.12 only from typing_extensions: import TypedDict from there."
            ) from None
        memo[td] = td
    return memo[td]


def _rebuilt_typeddict(td: type, memo: dict[Any, Any]) -> Any:
    from typing import NotRequired, Required

    from typing_extensions import TypedDict

    try:
        hints = get_type_hints(td, include_extras=True)
    except NameError as exc:
        raise UsageError(
            f"TypedDict {td.__name__!r} has a type hint that cannot be resolved: {exc}"
        ) from None
    required: frozenset[str] = getattr(td, "__required_keys__", frozenset())
    fields: dict[str, Any] = {}
    for key, hint in hints.items():
        qualifier: Any = Required if key in required else NotRequired
        while get_origin(hint) in (Required, NotRequired):  # wins: __required_keys__ is
            qualifier, hint = get_origin(hint), get_args(hint)[0]  # wrong for string hints
        fields[key] = qualifier[_strict_types(hint, memo)]
    rebuilt = cast(Any, TypedDict)(td.__name__, fields)
    for attr in ("__doc__", "__module__", "__qualname__", "__pydantic_config__"):
        if hasattr(td, attr):
            setattr(rebuilt, attr, getattr(td, attr))
    return rebuilt


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
_SCHEMA_BACKENDS = ("jsonschema_rs", "jsonschema")
_STANDARD_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_TYPE_ALIASES: dict[str, str | None] = {
    **dict.fromkeys(("dict", "hashmap", "hashtable", "map"), "object"),
    **dict.fromkeys(("float", "double"), "number"),
    **dict.fromkeys(("tuple", "list", "arraylist", "queue", "stack", "set"), "array"),
    **dict.fromkeys(("int", "long", "short", "byte", "bigint"), "integer"),
    "bool": "boolean",
    **dict.fromkeys(("str", "char"), "string"),
    **dict.fromkeys(("any", ""), None),
}
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalItems",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
    }
)


class _Problem(NamedTuple):
    """One schema violation, whichever validator found it."""

    loc: tuple[str | int, ...]
    keyword: str
    instance: Any
    message: str
    names: tuple[str, ...] = ()
    """The missing or unexpected properties (``required``, ``additionalProperties``)."""
    expected: tuple[Any, ...] = ()
    """The allowed types, options or constant (``type``, ``enum``, ``const``)."""


def _schema_check(tool_name: str, schema: dict[str, Any]) -> ArgsCheck:
    """Validation against ``schema``: a pydantic ``ValidationError`` on failure."""
    normal = _normalised(schema)
    if normal.get("type", "object") != "object":
        raise UsageError(
            f"Tool {tool_name!r}: parameters must be a JSON schema of type 'object' (named "
            f"arguments), not {schema.get('type')!r}."
        )
    is_valid, problems = _compile_schema(tool_name, normal)

    def check(args: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(args)
        if is_valid(data):
            return data
        found = problems(data)
        fixed = _with_numbers(data, found)
        if fixed is not None:
            if is_valid(fixed):
                return fixed
            found = problems(fixed)
        raise _validation_error(tool_name, found)

    return check


def _normalised(schema: Any) -> Any:
    """The schema as validators read it: type aliases (``dict``, ``float``...) as JSON types,
    ``any`` as no constraint, draft-3 style ``required: true`` dropped."""
    if not isinstance(schema, dict):
        return schema
    out = {key: _normalised_keyword(key, value) for key, value in schema.items()}
    if "type" in out:
        kind = _json_types(out["type"])
        if kind is None:
            del out["type"]
        else:
            out["type"] = kind
    if "required" in out and not isinstance(out["required"], list):
        del out["required"]
    return out


def _normalised_keyword(key: str, value: Any) -> Any:
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: _normalised(sub) for name, sub in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [_normalised(sub) for sub in value]
    if key in _SCHEMA_ONE:
        return [_normalised(s) for s in value] if isinstance(value, list) else _normalised(value)
    return value


def _json_types(kind: Any) -> Any:
    """A ``type`` value in JSON Schema's words; None when it allows anything."""
    if isinstance(kind, list):
        kinds = [_json_types(k) for k in kind]
        return None if None in kinds else kinds
    if not isinstance(kind, str) or kind in _STANDARD_TYPES:
        return kind
    lowered = kind.lower()
    if lowered in _STANDARD_TYPES:
        return lowered
    return _TYPE_ALIASES.get(lowered, kind)


def _compile_schema(
    tool_name: str, schema: dict[str, Any]
) -> tuple[Callable[[Any], bool], Callable[[Any], list[_Problem]]]:
    """``is_valid`` and ``problems`` for ``schema``, from the first validator installed."""
    for backend in _SCHEMA_BACKENDS:
        try:
            module = importlib.import_module(backend)
        except ImportError:
            continue
        compile_ = _compile_rs if backend == "jsonschema_rs" else _compile_py
        try:
            return compile_(module, schema)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"Tool {tool_name!r}: parameters is not a valid JSON schema ({reason})."
            ) from None
    raise UsageError(
        f"Tool {tool_name!r}: checking arguments against a JSON schema needs the jsonschema-rs "
        "or jsonschema package, so install one (pip install jsonschema-rs)."
    )


def _no_remote_refs(uri: str) -> Any:
    raise ValueError(f"remote $ref {uri!r} is not fetched; inline it in the schema")


def _compile_rs(
    module: Any, schema: dict[str, Any]
) -> tuple[Callable[[Any], bool], Callable[[Any], list[_Problem]]]:
    validator = module.validator_for(schema, validate_formats=False, retriever=_no_remote_refs)

    def problems(data: Any) -> list[_Problem]:
        return [_rs_problem(err) for err in validator.iter_errors(data)]

    return validator.is_valid, problems


def _rs_problem(err: Any) -> _Problem:
    kind, loc = err.kind, tuple(err.instance_path)
    detail = kind.as_dict()
    if kind.name == "required":
        return _Problem(loc, "required", err.instance, err.message, names=(detail["property"],))
    if kind.name == "additionalProperties":
        names = tuple(detail["unexpected"])
        return _Problem(loc, kind.name, err.instance, err.message, names=names)
    expected: tuple[Any, ...] = ()
    if kind.name == "type":
        expected = tuple(detail["types"])
    elif kind.name == "enum":
        expected = tuple(detail["options"])
    elif kind.name == "const":
        expected = (detail["expected_value"],)
    return _Problem(loc, kind.name, err.instance, err.message, expected=expected)


def _compile_py(
    module: Any, schema: dict[str, Any]
) -> tuple[Callable[[Any], bool], Callable[[Any], list[_Problem]]]:
    cls = module.validators.validator_for(schema, default=module.Draft202012Validator)
    cls.check_schema(schema)
    for ref in _refs(schema):  # jsonschema resolves a $ref only when it meets one
        if not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r} is outside the schema; inline it")
        if ref.startswith("#/") and _at_pointer(schema, ref) is _NOWHERE:
            raise ValueError(f"$ref {ref!r} points nowhere in the schema")
    validator = cls(schema)

    def problems(data: Any) -> list[_Problem]:
        return [_py_problem(err) for err in validator.iter_errors(data)]

    return validator.is_valid, problems


_NOWHERE = object()


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in the schema."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _at_pointer(schema: Any, ref: str) -> Any:
    from urllib.parse import unquote

    node = schema
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _NOWHERE
    return node


def _py_problem(err: Any) -> _Problem:
    keyword, value, instance = str(err.validator), err.validator_value, err.instance
    problem = _Problem(tuple(err.absolute_path), keyword, instance, err.message)
    if keyword == "required" and isinstance(instance, dict):
        return problem._replace(names=tuple(p for p in value if p not in instance))
    if keyword == "additionalProperties" and isinstance(instance, dict):
        return problem._replace(names=_unexpected(instance, err.schema))
    if keyword == "type":
        return problem._replace(expected=(value,) if isinstance(value, str) else tuple(value))
    if keyword == "enum":
        return problem._replace(expected=tuple(value))
    if keyword == "const":
        return problem._replace(expected=(value,))
    return problem


def _unexpected(instance: dict[str, Any], schema: dict[str, Any]) -> tuple[str, ...]:
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return tuple(
        key for key in instance if key not in known and not any(re.search(p, key) for p in patterns)
    )


def _with_numbers(data: dict[str, Any], problems: list[_Problem]) -> dict[str, Any] | None:
    """``data`` with JSON-number strings read as numbers where the schema wants a number."""
    fixes: list[tuple[tuple[str | int, ...], int | float]] = []
    for p in problems:
        if p.keyword == "type" and p.loc and isinstance(p.instance, str):
            number = _number_from_text(p.instance, p.expected)
            if number is not None:
                fixes.append((p.loc, number))
    if not fixes:
        return None
    fixed = copy.deepcopy(data)
    for loc, number in fixes:
        target: Any = fixed
        for step in loc[:-1]:
            target = target[step]
        target[loc[-1]] = number
    return fixed


def _number_from_text(text: str, expected: tuple[Any, ...]) -> int | float | None:
    number: int | float | None = None
    if "integer" in expected:
        number = _json_int(text)
    if number is None and "number" in expected:
        number = _json_float(text)
    return number


def _validation_error(title: str, problems: list[_Problem]) -> ValidationError:
    """The problems as a pydantic ``ValidationError``, which the loop renders for the model."""
    details: list[Any] = []
    seen: set[tuple[Any, str]] = set()
    for problem in problems:
        for line in _line_errors(problem):
            key = (line["loc"], str(line["type"]))
            if key not in seen:
                seen.add(key)
                details.append(line)
    return ValidationError.from_exception_data(title, details)


def _line_errors(p: _Problem) -> list[dict[str, Any]]:
    if p.keyword == "required" and p.names:
        return [{"type": "missing", "loc": (*p.loc, n), "input": p.instance} for n in p.names]
    if p.keyword == "additionalProperties" and p.names and isinstance(p.instance, dict):
        return [
            {"type": "extra_forbidden", "loc": (*p.loc, n), "input": p.instance.get(n)}
            for n in p.names
        ]
    from pydantic_core import PydanticCustomError

    error = PydanticCustomError(f"json_schema_{p.keyword}", _expectation(p))
    return [{"type": error, "loc": p.loc, "input": p.instance}]


def _expectation(p: _Problem) -> str:
    if p.keyword == "type":
        return "Input should be of type " + " or ".join(str(t) for t in p.expected)
    if p.keyword == "enum":
        options = ", ".join(json.dumps(o, default=str) for o in p.expected)
        return f"Input should be one of {truncate(options, 300)}"
    if p.keyword == "const" and p.expected:
        return f"Input should be {json.dumps(p.expected[0], default=str)}"
    return p.message


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
