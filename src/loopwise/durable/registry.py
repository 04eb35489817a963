"""Agents registered by import path: ``loopwise serve --agents myproject.agents``.

A spec is ``module`` or ``module:attribute``. A module contributes its module-level
:class:`~loopwise.Agent` objects by attribute name, unless it has a dict named ``agents`` or
``AGENTS`` (name → Agent), which then wins. ``module:attribute`` names such a dict or one
Agent (registered under its ``name``, else the attribute name).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..agent import Agent
from ..errors import UsageError

__all__ = ["load_agents"]


def load_agents(spec: str) -> dict[str, Agent[Any, Any]]:
    """Import ``spec`` and return its agents by name (the current directory is importable)."""
    module_name, _, attr = spec.strip().partition(":")
    if not module_name:
        raise UsageError(
            f"Agents spec {spec!r} is empty; give a module path such as 'myproject.agents'."
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"Cannot import agents module {module_name!r}: {exc}. Check the path and that "
            "it is importable from the current directory."
        ) from exc
    if attr:
        if not hasattr(module, attr):
            raise UsageError(f"Module {module_name!r} has no attribute {attr!r}.")
        found = _from_value(getattr(module, attr), attr, spec)
    else:
        table = next((getattr(module, n) for n in ("agents", "AGENTS") if hasattr(module, n)), None)
        if table is not None:
            found = _from_value(table, module_name, spec)
        else:
            found = {n: v for n, v in vars(module).items() if isinstance(v, Agent)}
    if not found:
        raise UsageError(
            f"No agents found in {spec!r}: define Agent objects at module level, or a dict "
            "named 'agents' mapping names to Agent objects."
        )
    return found


def _from_value(value: object, name: str, spec: str) -> dict[str, Agent[Any, Any]]:
    if isinstance(value, Agent):
        return {value.name or name: value}
    if isinstance(value, Mapping):
        bad = [
            str(k) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, Agent)
        ]
        if bad:
            raise UsageError(
                f"In {spec!r}, these entries are not 'name: Agent' pairs: {', '.join(bad)}."
            )
        return dict(value)
    raise UsageError(
        f"{spec!r} is a {type(value).__name__}; it must be an Agent or a dict of name → Agent."
    )
