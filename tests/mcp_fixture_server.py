"""An MCP server (the official SDK's low-level ``Server``, over stdio) for what the npm
reference servers cannot show: hostile names, schemas and results, a call that is cancelled,
a server that dies mid-call. ``MCP_FIXTURE_LOG`` names a file where it records events.

Run: ``python tests/mcp_fixture_server.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()
OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def log(event: str) -> None:
    path = os.environ.get("MCP_FIXTURE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(event + "\n")


def tool(name: str, schema: dict[str, Any] | None = None, **extra: Any) -> types.Tool:
    return types.Tool(name=name, input_schema=schema or OBJECT, **extra)


TOOLS = [
    tool("sleep", {"type": "object", "properties": {"seconds": {"type": "number"}}}),
    tool("count"),
    tool("die"),
    tool("a.b/c"),
    tool("a_b_c"),
    tool("x" * 200),
    tool("ünï"),
    tool("___"),
    tool("read.me", annotations=types.ToolAnnotations(read_only_hint=True)),
    tool(
        "echo_args",
        {"type": "object", "properties": {k: {"type": "string"} for k in ("ctx", "self", "__ctx")}},
    ),
    tool("invalid_schema", {"type": "object", "properties": {"a": {"minimum": "lots"}}}),
    tool("remote_ref", {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x"}}}),
    tool("huge_description", description="A" * 100_000),
    tool("bad_image"),
    tool("svg_image"),
    tool("many_images"),
    tool("huge_text"),
    tool("is_error"),
    tool(
        "bad_structured",
        output_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    ),
    tool("blob_resource"),
    tool("audio"),
    tool("fake_lost"),
    tool("fake_session"),
]


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def image(data: str, mime: str) -> types.ImageContent:
    return types.ImageContent(type="image", data=data, mime_type=mime)


async def _sleep(args: dict[str, Any]) -> types.CallToolResult:
    log("sleep started")
    try:
        await anyio.sleep(float(args.get("seconds", 10)))
    except anyio.get_cancelled_exc_class():
        log("sleep cancelled")
        raise
    log("sleep finished")
    return types.CallToolResult(content=[text("slept")])


def _count() -> types.CallToolResult:
    log("count")
    return types.CallToolResult(content=[text("counted")])


def _die() -> types.CallToolResult:
    log("die")
    sys.stdout.flush()
    os._exit(7)


RESULTS: dict[str, Any] = {
    "bad_image": lambda: [image("not base64!!", "image/png")],
    "svg_image": lambda: [image(base64.b64encode(b"<svg/>").decode(), "image/svg+xml")],
    "many_images": lambda: [image(PNG, "image/png") for _ in range(20)],
    "huge_text": lambda: [text("y" * 1_000_000)],
    "audio": lambda: [types.AudioContent(type="audio", data=PNG, mime_type="audio/wav")],
    "blob_resource": lambda: [
        types.EmbeddedResource(
            type="resource",
            resource=types.BlobResourceContents(uri="file:///x.bin", blob=PNG, mime_type="x/y"),
        )
    ],
}


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    name, args = params.name, dict(params.arguments or {})
    if name == "sleep":
        return await _sleep(args)
    if name == "count":
        return _count()
    if name == "die":
        return _die()
    if name == "echo_args":
        return types.CallToolResult(content=[text(json.dumps(args, sort_keys=True))])
    if name == "is_error":
        return types.CallToolResult(content=[text("denied by the server")], is_error=True)
    if name == "bad_structured":
        return types.CallToolResult(content=[text("{}")], structured_content={"n": "x"})
    if name == "fake_lost":
        raise ConnectionError("Connection closed")
    if name == "fake_session":
        from mcp.shared.exceptions import MCPError

        raise MCPError(code=-32600, message="Session not found")
    if name in RESULTS:
        return types.CallToolResult(content=RESULTS[name]())
    return types.CallToolResult(content=[text(f"called {name}")])


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def main() -> None:
    log("started")
    server: Server[Any] = Server("fixture", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    asyncio.run(main())
