"""What a caller may submit: input, model, budget and metadata, checked before a run exists."""

from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError
from ..limits import Budget
from ..models import KNOWN_PROVIDERS
from .records import InvalidArguments

__all__ = [
    "MAX_ARGUMENTS_BYTES",
    "MAX_INPUT_BYTES",
    "MAX_METADATA_BYTES",
    "check_budget",
    "check_input",
    "check_metadata",
    "check_model",
]

MAX_INPUT_BYTES = 100_000
MAX_METADATA_BYTES = 16_000
MAX_ARGUMENTS_BYTES = 100_000


def check_input(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArguments("The input is empty; give the agent a task.")
    size = len(text.encode())
    if size > MAX_INPUT_BYTES:
        raise InvalidArguments(f"The input is {size} bytes; the limit is {MAX_INPUT_BYTES}.")
    return text


def check_model(model: str | None) -> str | None:
    if model is None:
        return None
    provider, sep, name = model.partition(":")
    if not sep or not name or provider not in KNOWN_PROVIDERS:
        raise InvalidArguments(
            f"Model {model!r} is not of the form 'provider:model' with a known provider "
            f"({', '.join(KNOWN_PROVIDERS)})."
        )
    return model


def check_budget(budget: dict[str, Any] | None) -> dict[str, Any]:
    if not budget:
        return {}
    try:
        Budget(**budget)
    except TypeError as exc:
        raise InvalidArguments(f"Invalid budget: {exc}.") from None
    except UsageError as exc:
        raise InvalidArguments(str(exc)) from None
    for key, value in budget.items():
        ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        if not ok or (value is not None and value < 0):
            raise InvalidArguments(f"Budget {key} must be a non-negative number, not {value!r}.")
    return dict(budget)


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if not metadata:
        return {}
    try:
        size = len(json.dumps(metadata))
    except (TypeError, ValueError):
        raise InvalidArguments(
            "Metadata must be plain JSON (objects, lists, text, numbers)."
        ) from None
    if size > MAX_METADATA_BYTES:
        raise InvalidArguments(f"Metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}.")
    return dict(metadata)
