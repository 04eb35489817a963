"""``loopwise mcp serve``: loopwise agents as MCP tools, driven over stdio by the official
``mcp`` Python client (a real subprocess of the loopwise command)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

AGENTS = '''
from pydantic import BaseModel

from loopwise import Agent, tool
from loopwise.models.testing import ScriptedModel, FunctionModel, call


class Point(BaseModel):
    x: int
    y: int


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def wait() -> str:
    """Wait a minute."""
    import asyncio
    from pathlib import Path

    Path("wait.log").write_text("started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        Path("wait.log").write_text("cancelled")
        raise
    return "waited"


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return "deleted"


def sums(m, t):
    return call("add", a=2, b=3) if len(m) < 3 else "The sum is 5."


agents = {
    "adder": Agent(FunctionModel(sums), tools=[add], system="Adds numbers."),
    "pointer": Agent(FunctionModel(lambda m, t: call("final_answer", x=1, y=2)), output_type=Point),
    "careful": Agent(FunctionModel(lambda m, t: call("delete_file", path="/x")),
                     tools=[delete_file]),
    "slow": Agent(ScriptedModel([call("wait"), "never"]), tools=[wait]),
    "broken": Agent(FunctionModel(lambda m, t: 1 / 0)),
}
'''


def text_of(result: Any) -> str:
    return str(getattr(result.content[0], "text", ""))


@pytest.fixture
def served(tmp_path: Path) -> StdioServerParameters:
    (tmp_path / "served_agents.py").write_text(AGENTS)
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "loopwise", "mcp", "serve", "--agents", "served_agents"],
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(tmp_path)},
    )


async def test_served_agents_over_stdio(served: StdioServerParameters) -> None:
    progress: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with Client(served, mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"adder", "pointer", "careful", "slow", "broken"}
        assert tools["adder"].input_schema["required"] == ["task"]
        assert tools["pointer"].output_schema is not None
        added = await client.call_tool(
            "adder", {"task": "2+3"}, progress_callback=cast(Any, on_progress)
        )
        assert not added.is_error and text_of(added) == "The sum is 5."
        assert ("calling add") in [m for _, m in progress]
        point = await client.call_tool("pointer", {"task": "a point"})
        assert point.structured_content == {"x": 1, "y": 2}
        careful = await client.call_tool("careful", {"task": "delete"})
        assert careful.is_error and "delete_file needs a human's approval" in text_of(careful)
        broken = await client.call_tool("broken", {"task": "x"})
        assert broken.is_error and "ended failed" in text_of(broken)
        for bad in ({}, {"task": ""}, {"task": 5}, {"task": "x" * 100_001}):
            refused = await client.call_tool("adder", bad)
            assert refused.is_error
        unknown = await client.call_tool("nope", {"task": "x"})
        assert unknown.is_error


async def test_cancelling_a_served_run(served: StdioServerParameters) -> None:
    log = Path(str(served.cwd)) / "wait.log"
    async with Client(served, mode="legacy") as client:
        task = asyncio.create_task(client.call_tool("slow", {"task": "wait"}))
        for _ in range(200):
            if log.exists():
                break
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        done = await client.call_tool("adder", {"task": "2+3"})  # the server goes on serving
        assert text_of(done) == "The sum is 5." and time.perf_counter() - started < 10
    assert log.read_text() == "cancelled"  # the client's cancel reached the run's tool


def test_serve_refuses_a_module_without_agents(tmp_path: Path) -> None:
    (tmp_path / "empty_mod.py").write_text("x = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "loopwise", "mcp", "serve", "--agents", "empty_mod"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2 and "offers no loopwise Agent" in done.stderr


@pytest.fixture
def http_served(tmp_path: Path) -> Iterator[str]:
    """``loopwise mcp serve --http`` on a free port: its URL."""
    from mcp_support import free_port, wait_port

    (tmp_path / "served_agents.py").write_text(AGENTS)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loopwise", "mcp", "serve", "--agents", "served_agents",
         "--http", str(port)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, server, limit=30)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(10)


async def test_served_agents_over_http(http_served: str) -> None:
    async with Client(http_served) as client:
        assert "adder" in {t.name for t in (await client.list_tools()).tools}
        added = await client.call_tool("adder", {"task": "2+3"})
    assert text_of(added) == "The sum is 5."


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_http_serving_is_loopback_only(tmp_path: Path, host: str) -> None:
    (tmp_path / "served_agents.py").write_text(AGENTS)
    done = subprocess.run(
        [sys.executable, "-m", "loopwise", "mcp", "serve", "--agents", "served_agents",
         "--http", "18766", "--host", host],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2 and "loopback only" in done.stderr
