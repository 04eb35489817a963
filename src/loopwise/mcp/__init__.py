"""MCP (Model Context Protocol) servers' tools in loopwise agents (extra ``loopwise[mcp]``).

>>> fs = MCPServer.stdio("npx", ["-y", "@modelcontextprotocol/server-filesystem", "work"],
...                      prefix="fs")  # doctest: +SKIP
>>> agent = Agent(model, tools=[fs])  # doctest: +SKIP

A server is a toolset capability: started when a run starts, its tools listed and added,
stopped when the run ends. See :class:`MCPServer`.
"""

from __future__ import annotations

from .client import ElicitHandler, MCPServer, ProgressHandler
from .config import load_config, parse_config, server_from_command
from .connection import HttpSpec, MCPStartError, StdioSpec

__all__ = [
    "ElicitHandler",
    "HttpSpec",
    "MCPServer",
    "MCPStartError",
    "ProgressHandler",
    "StdioSpec",
    "load_config",
    "parse_config",
    "server_from_command",
]
