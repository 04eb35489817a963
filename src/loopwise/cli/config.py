"""The user config file: ``<config dir>/config.toml`` (``LOOPWISE_CONFIG_DIR``, else the
platform's user config directory, e.g. ``~/.config/loopwise``).

Precedence, for every setting: a flag, then the environment (``LOOPWISE_MODEL`` for the
model), then the file, then the built-in default. The top level is for runs without
``--agent``; an ``--agent module:attr`` run takes only its ``[agents."module:attr"]`` table
(its own code already chose the rest). Example::

    model = "anthropic:claude-sonnet-4-6"
    tools = ["files", "http"]

    [budget]
    usd = 0.50
    tokens = 200000
    seconds = 600
    steps = 25

    [mcp.servers.fs]
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-filesystem", "./work"]

    [mcp.servers.search]
    url = "https://mcp.example.com/mcp"

    [agents."myproject.agents:researcher"]
    model = "openai:gpt-4.1"
    budget = { usd = 2.0 }
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UsageError

if TYPE_CHECKING:
    from .main import RunOptions

__all__ = ["apply_config", "config_app", "config_dir", "config_path", "load_config"]

_TOP_KEYS = {"model", "tools", "budget", "mcp", "agents", "system"}
_AGENT_KEYS = {"model", "tools", "budget", "mcp", "system"}
_BUDGET_KEYS = {"usd": "budget_usd", "tokens": "budget_tokens", "seconds": "timeout"}


def config_dir(*, create: bool = False) -> Path:
    """``LOOPWISE_CONFIG_DIR``, else the platform's user config directory for loopwise."""
    configured = os.environ.get("LOOPWISE_CONFIG_DIR")
    if configured:
        path = Path(configured).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_config_dir("loopwise", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def config_path() -> Path:
    return config_dir() / "config.toml"


def load_config() -> dict[str, Any]:
    """The config file's settings ({} when there is none); a malformed file is a
    ``UsageError`` naming it."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"The config file {path} cannot be read: {exc.strerror}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"The config file {path} is not valid TOML: {exc}.") from None
    _check(data, _TOP_KEYS, path, "")
    for name, table in (data.get("agents") or {}).items():
        if not isinstance(table, dict):
            raise UsageError(f"The config file {path}: [agents.{name!r}] must be a table.")
        _check(table, _AGENT_KEYS, path, f"agents.{name}.")
    return data


def _check(data: dict[str, Any], allowed: set[str], path: Path, prefix: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise UsageError(
            f"The config file {path} has unknown setting(s) {names}; "
            f"known: {', '.join(sorted(allowed))}."
        )
    budget = data.get("budget", {})
    if not isinstance(budget, dict) or set(budget) - {*_BUDGET_KEYS, "steps"}:
        raise UsageError(
            f"The config file {path}: {prefix}budget takes usd, tokens, seconds and steps."
        )
    for key in ("model", "system"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"The config file {path}: {prefix}{key} must be a string.")
    tools = data.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise UsageError(f"The config file {path}: {prefix}tools must be a list of strings.")
    mcp_specs(data)


def settings_for(config: dict[str, Any], agent: str | None) -> dict[str, Any]:
    """The settings for a run: the top level without ``--agent``, else the agent's table."""
    if agent is None:
        return {k: v for k, v in config.items() if k != "agents"}
    return dict((config.get("agents") or {}).get(agent) or {})


def mcp_specs(settings: dict[str, Any]) -> tuple[str, ...]:
    """The config's MCP servers as ``--mcp`` values (a command line or a URL)."""
    servers = ((settings.get("mcp") or {}).get("servers")) or {}
    found: list[str] = []
    for name, server in servers.items():
        if not isinstance(server, dict):
            raise UsageError(f"The config file: mcp.servers.{name} must be a table.")
        if isinstance(server.get("url"), str):
            found.append(server["url"])
        elif isinstance(server.get("command"), str):
            args = server.get("args") or []
            found.append(shlex.join([server["command"], *map(str, args)]))
        else:
            raise UsageError(f"The config file: mcp.servers.{name} needs a command or a url.")
    return tuple(found)


def apply_config(options: RunOptions) -> RunOptions:
    """``options`` with the config file filling what neither a flag nor the environment set."""
    settings = settings_for(load_config(), options.agent)
    if not settings:
        return options
    changes: dict[str, Any] = {}
    if options.model is None and not os.environ.get("LOOPWISE_MODEL", "").strip():
        changes["model"] = settings.get("model")
    if not options.tools and settings.get("tools"):
        changes["tools"] = tuple(settings["tools"])
    if options.system is None and settings.get("system"):
        changes["system"] = settings["system"]
    budget = settings.get("budget") or {}
    for key, field in _BUDGET_KEYS.items():
        if getattr(options, field) is None and budget.get(key) is not None:
            changes[field] = budget[key]
    if options.max_steps is None and budget.get("steps") is not None:
        changes["max_steps"] = int(budget["steps"])
    if not options.mcp and not options.mcp_config:
        changes["mcp"] = mcp_specs(settings)
    changes = {k: v for k, v in changes.items() if v not in (None, ())}
    return dataclasses.replace(options, **changes) if changes else options


# -- loopwise config ------------------------------------------------------------------------

config_app = typer.Typer(
    name="config", help="The user config file: where it is, what it says.", no_args_is_help=True
)


@config_app.command("path")
def show_path() -> None:
    """Print where the config file is (it may not exist yet)."""
    typer.echo(str(config_path()))


@config_app.command("show")
def show(
    agent: Annotated[
        str | None,
        typer.Option(help="The settings this --agent gets (module:attr).", show_default=False),
    ] = None,
) -> None:
    """Print the settings the config file gives a run (or an --agent's run)."""
    import json

    from .display import json_safe

    try:
        settings = settings_for(load_config(), agent)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json_safe(json.dumps(settings, indent=2, ensure_ascii=False)))
