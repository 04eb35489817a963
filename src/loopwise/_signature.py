"""What a function's signature gives a tool: its name (checked), its parameters, type hints
and docstring; builtins and unnamed callables are refused with one sentence."""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Callable
from typing import Any, get_type_hints

from .errors import UsageError
from .output import FINAL_ANSWER_TOOL

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


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


def _parse_docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(fn)
    if not doc:
        return "", {}
    import docstring_parser

    parsed = docstring_parser.parse(doc)
    parts = [p for p in (parsed.short_description, parsed.long_description) if p]
    params = {p.arg_name: p.description for p in parsed.params if p.description}
    return "\n\n".join(parts), params
