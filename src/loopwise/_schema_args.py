"""Arguments checked against a JSON schema (tools made with ``tool_from_schema``): with
jsonschema-rs or jsonschema, BFCL/Java type names read as JSON types, problems turned into a
pydantic ``ValidationError`` the loop renders for the model."""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    NamedTuple,
    TypeAlias,
)

from pydantic_core import ValidationError

from ._render import truncate
from ._strict_args import _json_float, _json_int
from .errors import UsageError

if TYPE_CHECKING:
    pass


ArgsCheck: TypeAlias = "Callable[[Mapping[str, Any]], dict[str, Any]]"


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
