"""MCP servers from the ``{"mcpServers": {...}}`` files that Claude Desktop, Cursor and VS
Code use, and from a command line such as ``npx -y @modelcontextprotocol/server-everything``.

``${VAR}`` (or ``${env:VAR}``) in a command, argument, URL, header or environment value is
replaced by that environment variable, so secrets stay out of the file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .client import MCPServer

__all__ = ["load_config", "parse_config", "server_from_command"]

_VAR = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]+")
MAX_CONFIG_BYTES = 1_000_000


def prefix_for(name: str) -> str:
    """A tool-name prefix from a server's name (letters, digits, '_' and '-', 1-20)."""
    return (_NAME_BAD.sub("_", name).strip("_") or "mcp")[:20]


def _expand(text: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise UsageError(f"{where} uses ${{{var}}}, but the environment variable is not set.")
        return os.environ[var]

    return _VAR.sub(value, text)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where} must be a list of strings.")
    return [_expand(v, where) for v in value]


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f"{where} must be an object of string values.")
    return {k: _expand(v, where) for k, v in value.items()}


def _one(name: str, entry: Any, options: Mapping[str, Any]) -> MCPServer | None:
    where = f"MCP server {name!r}"
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where} must be an object with a 'command' or a 'url'.")
    if entry.get("disabled") is True:
        return None
    opts: dict[str, Any] = {"name": name, "prefix": prefix_for(name), **options}
    if isinstance(entry.get("url"), str):
        kind = entry.get("type", "http")
        if kind not in ("http", "streamable-http", "streamableHttp"):
            raise UsageError(f"{where}: transport {kind!r} is not supported; use 'http'.")
        headers = _string_map(entry.get("headers", {}), f"{where} headers")
        return MCPServer.http(_expand(entry["url"], where), headers=headers, **opts)
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise UsageError(f"{where} must have a 'command' (a string) or a 'url'.")
    args = _strings(entry.get("args", []), f"{where} args")
    env = _string_map(entry.get("env", {}), f"{where} env")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise UsageError(f"{where} cwd must be a string.")
    return MCPServer.stdio(_expand(command, where), args, env=env or None, cwd=cwd, **opts)


def parse_config(data: Any, **options: Any) -> list[MCPServer]:
    """The servers of a parsed config (``options`` apply to each, e.g. ``timeout``)."""
    servers = data.get("mcpServers", data.get("servers")) if isinstance(data, Mapping) else None
    if not isinstance(servers, Mapping):
        raise UsageError('An MCP config must be an object with "mcpServers": {name: server}.')
    found = [_one(str(name), entry, options) for name, entry in servers.items()]
    return [s for s in found if s is not None]


def load_config(path: str | Path, **options: Any) -> list[MCPServer]:
    """The servers in an ``mcp.json`` file."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"MCP config {str(file)!r} is larger than 1 MB.")
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"MCP config {str(file)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"MCP config {str(file)!r} is not readable JSON ({exc}).") from None
    return parse_config(data, **options)


def server_from_command(text: str, **options: Any) -> MCPServer:
    """A server from a command line (stdio) or an ``http(s)://`` URL."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        server = MCPServer.http(text, **options)
    else:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise UsageError(f"MCP command {text!r} could not be split ({exc}).") from None
        if not words:
            raise UsageError("An MCP command must not be empty.")
        server = MCPServer.stdio(words[0], words[1:], **options)
    if "prefix" not in options:
        server.prefix = prefix_for(server.name)
    return server
