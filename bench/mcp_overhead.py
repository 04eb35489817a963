"""What an MCP tool costs per call over a direct function tool, over stdio and HTTP.

The same agent (a ``ScriptedModel`` making N calls of an echo tool, then answering) runs
with three tools: a direct ``@tool`` echo, server-everything's ``echo`` over stdio and the
same over Streamable HTTP. The server is started before the clock (``async with server``);
the report gives the median per-call time of each and the overhead over the direct tool,
plus the one-off cost of starting each server.

    .venv/bin/python bench/mcp_overhead.py            # 200 calls each, 3 repeats
    .venv/bin/python bench/mcp_overhead.py --quick    # 20 calls, 1 repeat
    .venv/bin/python bench/mcp_overhead.py --json

Needs node and the npm package @modelcontextprotocol/server-everything (under .cache/npm,
or LOOPWISE_MCP_NPM). (Not named mcp.py: that would shadow the ``mcp`` package.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loopwise import Agent, tool
from loopwise.mcp import MCPServer
from loopwise.models.testing import ScriptedModel, Turn, call

ROOT = Path(__file__).parent.parent
NPM = Path(os.environ.get("LOOPWISE_MCP_NPM", ROOT / ".cache" / "npm")) / "node_modules"
EVERYTHING = NPM / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


@tool
async def echo(message: str) -> str:
    """Echo the message."""
    return f"Echo: {message}"


def script(name: str, calls: int) -> list[Turn]:
    return [*[call(name, message=str(i)) for i in range(calls)], "done"]


async def per_call(tools: list[Any], name: str, calls: int) -> float:
    """Seconds per call of a whole run of ``calls`` calls (checked to complete)."""
    agent = Agent(ScriptedModel(script(name, calls)), tools=tools, max_steps=calls + 1)
    started = time.perf_counter()
    result = await agent.run("go")
    elapsed = time.perf_counter() - started
    if result.status != "completed":
        raise RuntimeError(f"{name}: run ended {result.status}: {result.error}")
    return elapsed / calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_http() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/mcp"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server-everything (HTTP) did not start")


async def measure(calls: int, repeats: int) -> dict[str, Any]:
    stdio = MCPServer.stdio("node", [str(EVERYTHING), "stdio"], prefix="ev")
    proc, url = start_http()
    http = MCPServer.http(url, prefix="ev")
    figures: dict[str, Any] = {"calls": calls, "repeats": repeats}
    try:
        for label, server in (("stdio", stdio), ("http", http)):
            started = time.perf_counter()
            await server.__aenter__()
            figures[f"{label}_start_s"] = round(time.perf_counter() - started, 3)
        runs: dict[str, list[float]] = {"direct": [], "stdio": [], "http": []}
        for _ in range(repeats):
            runs["direct"].append(await per_call([echo], "echo", calls))
            runs["stdio"].append(await per_call([stdio], "ev_echo", calls))
            runs["http"].append(await per_call([http], "ev_echo", calls))
        for label, values in runs.items():
            figures[f"{label}_us_per_call"] = round(statistics.median(values) * 1e6, 1)
        for label in ("stdio", "http"):
            extra = figures[f"{label}_us_per_call"] - figures["direct_us_per_call"]
            figures[f"{label}_overhead_us"] = round(extra, 1)
    finally:
        await stdio.__aexit__(None, None, None)
        await http.__aexit__(None, None, None)
        proc.kill()
        proc.wait(5)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 calls, 1 repeat")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not EVERYTHING.exists():
        sys.exit(f"server-everything is not installed at {EVERYTHING}; see the docstring.")
    calls, repeats = (20, 1) if args.quick else (200, 3)
    figures = asyncio.run(measure(calls, repeats))
    if args.json:
        print(json.dumps(figures))
        return
    print(f"per call (median of {repeats} runs of {calls} calls):")
    print(f"  direct @tool      {figures['direct_us_per_call']:>10.1f} us")
    for label in ("stdio", "http"):
        print(
            f"  MCP {label:<5}         {figures[f'{label}_us_per_call']:>10.1f} us"
            f"   (+{figures[f'{label}_overhead_us']:.1f} us; server start "
            f"{figures[f'{label}_start_s']:.2f} s)"
        )


if __name__ == "__main__":
    main()
