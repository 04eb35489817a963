"""loopwise agents as an MCP server (``loopwise mcp serve --agents myproject.agents``).

Each agent is an MCP tool taking a ``task`` string; its answer comes back as text (and as
``structuredContent`` when the agent has a typed output). While it runs, each step is sent
as a progress notification when the client asked for progress; a client's cancellation
cancels the run. A run that stops for an approval comes back as an error result naming the
waiting calls (the tasks extension, which would pause instead, is not implemented).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..agent import Agent
from ..errors import UsageError
from ..events import ModelResponded, ToolCalled

__all__ = ["LOOPBACK", "agents_in", "build_server", "serve_http", "serve_stdio"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TASK_CHARS = 100_000
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"task": {"type": "string", "description": "What the agent should do."}},
    "required": ["task"],
}


def agents_in(spec: str) -> dict[str, Agent[Any, Any]]:
    """The agents a module offers: its ``agents`` (a dict or list) or every module-level
    :class:`Agent`, named by attribute (``module:attribute`` names one)."""
    module_name, _, attribute = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--agents {spec!r}: the module could not be imported ({exc}).") from None
    if attribute:
        found: Any = {attribute: getattr(module, attribute, None)}
    else:
        found = getattr(module, "agents", None)
        if found is None:
            found = {k: v for k, v in vars(module).items() if isinstance(v, Agent)}
    if isinstance(found, (list, tuple)):
        found = {getattr(a, "name", None) or f"agent_{i}": a for i, a in enumerate(found)}
    agents = {str(k): v for k, v in dict(found).items() if isinstance(v, Agent)}
    if not agents:
        raise UsageError(f"--agents {spec!r} offers no loopwise Agent.")
    bad = [name for name in agents if not _NAME.fullmatch(name)]
    if bad:
        raise UsageError(f"Agent names must be letters, digits, '_' or '-' (not {bad[0]!r}).")
    return agents


def _output_schema(agent: Agent[Any, Any]) -> dict[str, Any] | None:
    output_type = getattr(agent, "output_type", None)
    schema_of = getattr(output_type, "model_json_schema", None)
    if schema_of is None:
        return None
    schema = schema_of()
    return schema if isinstance(schema, dict) and schema.get("type") == "object" else None


def _description(name: str, agent: Agent[Any, Any]) -> str:
    text = getattr(agent, "description", None) or getattr(agent, "system", None) or ""
    first = str(text).strip().split("\n\n")[0][:1000]
    return first or f"Run the loopwise agent {name!r} on a task."


def build_server(agents: Mapping[str, Agent[Any, Any]]) -> Any:
    """An MCP low-level ``Server`` whose tools are ``agents``."""
    import mcp_types as types
    from mcp.server.lowlevel.server import Server

    from .. import __version__

    tools = [
        types.Tool(
            name=name,
            description=_description(name, agent),
            input_schema=TASK_SCHEMA,
            output_schema=_output_schema(agent),
            annotations=types.ToolAnnotations(open_world_hint=True, idempotent_hint=False),
        )
        for name, agent in agents.items()
    ]

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: Any) -> Any:
        agent = agents.get(params.name)
        task = (params.arguments or {}).get("task")
        if agent is None:
            return _error(f"There is no agent named {params.name!r}.")
        if not isinstance(task, str) or not task.strip() or len(task) > MAX_TASK_CHARS:
            return _error(
                "The argument 'task' must be a non-empty string of at most 100000 characters."
            )
        return await _run(agent, task, ctx)

    return Server("loopwise", version=__version__, on_list_tools=list_tools, on_call_tool=call_tool)


async def _run(agent: Agent[Any, Any], task: str, ctx: Any) -> Any:
    """Run the agent, sending each step as progress; its result as a CallToolResult."""
    stream = agent.stream(task)
    steps = 0
    limit = float(agent.max_steps) if getattr(agent, "max_steps", None) else None
    async for event in stream:
        if isinstance(event, ModelResponded):
            steps += 1
            await ctx.session.report_progress(steps, limit, f"step {steps}")
        elif isinstance(event, ToolCalled):
            await ctx.session.report_progress(steps, limit, f"calling {event.name}")
    return _result(stream.result)


def _result(result: Any) -> Any:
    import mcp_types as types

    if result.status == "completed":
        output = result.output
        text = output if isinstance(output, str) else json.dumps(output, default=str)
        structured = result.state.output if result.state is not None else None
        if not isinstance(structured, dict):
            structured = None
        block = types.TextContent(type="text", text=text)
        return types.CallToolResult(content=[block], structured_content=structured)
    if result.status == "input_required":
        waiting = ", ".join(p.tool_name for p in result.pending_approvals) or "a call"
        return _error(
            f"The run {result.run_id} stopped: {waiting} needs a human's approval, which "
            "this MCP server cannot ask for; approve it through the loopwise service."
        )
    reason = result.error or result.detail or result.stop_reason or result.status
    return _error(f"The run {result.run_id} ended {result.status}: {reason}")


def _error(text: str) -> Any:
    import mcp_types as types

    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def serve_stdio(agents: Mapping[str, Agent[Any, Any]]) -> None:
    """Serve ``agents`` over stdin/stdout until the client closes the connection."""
    from mcp.server.stdio import stdio_server

    server = build_server(agents)
    wrapped = sys.stdin, sys.stdout
    if sys.__stdin__ is not None and sys.__stdout__ is not None:
        # The SDK claims the real descriptors (and points fd 1 at stderr meanwhile, so
        # stray prints miss the wire): hand it the process's own streams, not wrappers.
        sys.stdin, sys.stdout = sys.__stdin__, sys.__stdout__
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        sys.stdin, sys.stdout = wrapped


def serve_http(agents: Mapping[str, Agent[Any, Any]], port: int, host: str = "127.0.0.1") -> None:
    """Serve ``agents`` over Streamable HTTP at ``http://host:port/mcp`` (loopback only:
    there is no authentication here; DNS-rebinding protection is on)."""
    import uvicorn

    if host not in LOOPBACK:
        raise UsageError(
            f"loopwise mcp serve --http listens on loopback only (not {host!r}): it has no "
            "authentication; put it behind an authenticating proxy."
        )
    app = build_server(agents).streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
