"""``loopwise mcp ...`` and the MCP servers of ``loopwise run --mcp/--mcp-config``.

``loopwise mcp tools CONFIG_OR_COMMAND`` starts the server(s) and lists what they offer:
each tool as the agent will see it, whether it asks first, its declared effects.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import LoopwiseError, UsageError
from .display import json_safe, printable

__all__ = ["mcp_app", "mcp_servers", "terminal_elicitation"]

mcp_app = typer.Typer(
    name="mcp",
    help="MCP (Model Context Protocol) servers: list what they offer.",
    no_args_is_help=True,
)

EXIT_FAILED = 1
EXIT_USAGE = 2


def mcp_servers(
    commands: Iterable[str], configs: Iterable[str], *, interactive: bool | None = None
) -> list[Any]:
    """The servers of ``--mcp COMMAND`` and ``--mcp-config FILE`` flags (not started yet).

    On a terminal, a server's questions (elicitation) are asked there; otherwise declined.
    """
    from ..mcp import load_config, server_from_command

    ask = sys.stdin.isatty() if interactive is None else interactive
    options: dict[str, Any] = {"elicitation": terminal_elicitation} if ask else {}
    servers = [server_from_command(c, **options) for c in commands]
    for path in configs:
        servers.extend(load_config(path, **options))
    seen: dict[str, str] = {}
    for server in servers:
        key = server.prefix or server.name
        if key in seen:
            raise UsageError(
                f"Two MCP servers are both named {key!r}; give them different names in the "
                "config file."
            )
        seen[key] = server.name
    return servers


async def terminal_elicitation(message: str, schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """Ask the server's question on the terminal; an empty first answer declines."""
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    typer.echo(printable(f"\nAn MCP server asks: {message}"), err=True)
    answers: dict[str, Any] = {}
    for name, spec in props.items() if isinstance(props, Mapping) else ():
        kind = spec.get("type", "string") if isinstance(spec, Mapping) else "string"
        raw = await asyncio.to_thread(input, printable(f"  {name} ({kind}): "))
        if not raw and not answers:
            return None
        answers[name] = _typed(raw, kind)
    return answers


def _typed(raw: str, kind: Any) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        return raw
    if kind == "boolean":
        return raw.strip().lower() in ("y", "yes", "true", "1")
    return raw


def _servers_of(target: str) -> list[Any]:
    from ..mcp import load_config, server_from_command

    path = Path(target)
    if target.endswith(".json") or (path.is_file() and " " not in target):
        return load_config(path, ask="destructive")
    return [server_from_command(target)]


async def _describe(server: Any) -> dict[str, Any]:
    async with server:
        tools = await server.make_tools()
        remote = {t.name: t for t in await server.list_tools()}
    listed = []
    for t in tools:
        listed.append(
            {
                "name": t.name,
                "asks": bool(t.requires_approval),
                "effects": sorted(t.effects),
                "description": t.description,
            }
        )
    return {
        "server": server.name,
        "tools": listed,
        "skipped": dict(server.skipped),
        "offered": len(remote),
    }


def _print(report: Mapping[str, Any]) -> None:
    typer.echo(printable(f"{report['server']}: {len(report['tools'])} tools"))
    for t in report["tools"]:
        flags = ", ".join(t["effects"]) or "no declared effects"
        ask = "asks first; " if t["asks"] else ""
        first = (t["description"].splitlines() or [""])[0][:120]
        typer.echo(printable(f"  {t['name']}  [{ask}{flags}]  {first}"))
    for name, reason in report["skipped"].items():
        typer.echo(printable(f"  (left out {name!r}: {reason})"))


@mcp_app.command("tools")
def tools_command(
    target: Annotated[
        str,
        typer.Argument(
            help='An mcp.json file ({"mcpServers": ...}), a server command such as '
            "'npx -y @modelcontextprotocol/server-everything', or an http(s):// URL.",
            show_default=False,
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Start the MCP server(s) in TARGET and list the tools an agent would get."""
    try:
        servers = _servers_of(target)
        reports = [asyncio.run(_describe(s)) for s in servers]
    except UsageError as exc:
        typer.echo(printable(f"error: {exc}"), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except LoopwiseError as exc:
        typer.echo(printable(f"error: {exc}"), err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if json_output:
        typer.echo(json_safe(json.dumps(reports, ensure_ascii=False)))
        return
    for report in reports:
        _print(report)


@mcp_app.command("serve")
def serve_command(
    agents: Annotated[
        str,
        typer.Option(
            "--agents",
            help="The module whose agents to serve (its 'agents' dict or list, or every "
            "module-level Agent), or module:attribute for one.",
            show_default=False,
        ),
    ],
    http: Annotated[
        int | None,
        typer.Option(
            "--http",
            help="Serve Streamable HTTP on this port (at /mcp, loopback only) instead of stdio.",
            min=1,
            max=65535,
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="The loopback address for --http.")] = "127.0.0.1",
) -> None:
    """Serve loopwise agents as MCP tools over stdio (desktop clients) or HTTP."""
    from ..mcp.serve import agents_in, serve_http, serve_stdio

    try:
        found = agents_in(agents)
        if http is not None:
            serve_http(found, http, host)
            return
    except UsageError as exc:
        typer.echo(printable(f"error: {exc}"), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    asyncio.run(serve_stdio(found))
