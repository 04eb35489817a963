"""Strict scalars for tool arguments: booleans and numbers never pass for each other; a
string that is exactly a JSON number is read as one; TypedDicts rebuilt for pydantic."""

from __future__ import annotations

import collections
import collections.abc as cabc
import re
import sys
import types
from functools import cache
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from .errors import UsageError

if TYPE_CHECKING:
    pass


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


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
