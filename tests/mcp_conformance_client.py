"""The client the official MCP conformance suite drives: ``python mcp_conformance_client.py
URL`` with ``MCP_CONFORMANCE_SCENARIO`` set. It is loopwise's MCP client, in an agent where
the scenario calls a tool (a ScriptedModel plays the model)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from loopwise import Agent
from loopwise.mcp import MCPServer
from loopwise.models.testing import ScriptedModel, call


def accept_defaults(message: str, schema: Any) -> dict[str, Any]:
    """Accept, leaving every field to the schema's defaults."""
    return {}


async def call_every_tool(url: str, **args: Any) -> None:
    server = MCPServer.http(url, ask="never", elicitation=accept_defaults, timeout=20)
    async with server:
        tools = await server.list_tools()
    script: list[Any] = [call(t.name, **args.get(t.name, {})) for t in tools]
    agent = Agent(ScriptedModel([*script, "done"]), tools=[server])
    result = await agent.run("use the tools")
    print(result.status, [m for m in result.messages][-2:], file=sys.stderr)


async def main(url: str, scenario: str) -> None:
    if scenario == "initialize":
        async with MCPServer.http(url) as server:
            await server.list_tools()
    elif scenario == "tools_call":
        await call_every_tool(url, add_numbers={"a": 5, "b": 3})
    else:
        await call_every_tool(url)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[-1], os.environ.get("MCP_CONFORMANCE_SCENARIO", "")))
