"""MCP client against hostile or failing servers: names, schemas and results chosen to hurt,
servers that die, hang, never start or lose their session, and broken config files.

The server is tests/mcp_fixture_server.py (the official SDK's low-level server).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent
from loopwise.errors import UsageError
from loopwise.mcp import MCPServer, MCPStartError, parse_config, server_from_command
from loopwise.models.testing import ScriptedModel, call
from loopwise.tools import ToolFailed
from mcp_support import FIXTURE, PYTHON, free_port, results

pytestmark = pytest.mark.anyio


def fixture(log: Path, **options: Any) -> MCPServer:
    options.setdefault("ask", "never")
    env = {"MCP_FIXTURE_LOG": str(log)}
    return MCPServer.stdio(PYTHON, [str(FIXTURE)], env=env, **options)


def logged(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def test_a_hostile_server(tmp_path: Path) -> None:
    """One server start (they are slow here) for names, schemas, results and look-alikes."""
    log = tmp_path / "log"
    async with fixture(log) as server:
        assert server.protocol_version == "2026-07-28"  # the stateless revision, negotiated
        await check_names(server)
        await check_schemas(server)
        await check_results(server)
        await check_lookalike_errors(server, log)
        await check_timeout(server, log)


async def check_names(server: MCPServer) -> None:
    names = [t.name for t in await server.make_tools()]
    variants = {"a.b/c": "a_b_c", "a_b_c": "a_b_c_2", "ünï": "n", "___": "tool"}
    for local in variants.values():
        assert local in names
    assert "x" * 64 in names and all(len(n) <= 64 for n in names)
    assert len(set(names)) == len(names)
    held = sum(1 for n in variants.values() if n in names) + ("x" * 64 in names)
    figure(f"mcp attack class tool names: {len(variants) + 1} tried, {held} held")


async def check_schemas(server: MCPServer) -> None:
    tools = {t.name: t for t in await server.make_tools()}
    args = {"ctx": "1", "self": "2", "__ctx": "3"}
    model = ScriptedModel([call("echo_args", **args), "ok"])
    [result] = results((await Agent(model, tools=[server]).run("go")).messages)
    echoed = result.content  # through the tool as the model calls it
    assert set(server.skipped) == {"invalid_schema", "remote_ref"}  # never fetched, never used
    assert "not fetched" in server.skipped["remote_ref"]
    assert len(tools["huge_description"].description) < 4100
    assert json.loads(echoed) == {"__ctx": "3", "ctx": "1", "self": "2"}
    figure("mcp attack class schemas: 4 tried (invalid, remote $ref, 100k description, "
           "argument names ctx/self/__ctx), 4 held")  # fmt: skip


async def check_results(server: MCPServer) -> None:
    names = ["bad_image", "svg_image", "many_images", "huge_text", "audio", "blob_resource",
             "is_error", "bad_structured"]  # fmt: skip
    model = ScriptedModel([*[call(n) for n in names], "ok"])
    result = await Agent(model, tools=[server]).run("go")
    got = dict(zip(names, results(result.messages), strict=True))
    assert "not valid base64" in got["bad_image"].content and not got["bad_image"].images
    assert "image/svg+xml left out" in got["svg_image"].content and not got["svg_image"].images
    assert len(got["many_images"].images) == 8 and "12 more images" in got["many_images"].content
    assert len(got["huge_text"].content) < 21_000 and "truncated" in got["huge_text"].content
    assert "audio" in got["audio"].content and "left out" in got["audio"].content
    assert "binary resource file:///x.bin" in got["blob_resource"].content
    assert got["is_error"].is_error and "denied by the server" in got["is_error"].content
    assert got["bad_structured"].is_error and "outputSchema" in got["bad_structured"].content
    assert result.state is not None and result.state.untrusted  # MCP output taints the run
    figure(f"mcp attack class results: {len(names)} tried, {len(names)} held")


async def check_lookalike_errors(server: MCPServer, log: Path) -> None:
    with pytest.raises(ToolFailed, match="refused the call"):
        await server.call_tool("fake_lost", {})  # the text of an error is not a lost link
    assert server.restarts == 0
    with pytest.raises(ToolFailed, match="Session not found"):
        await server.call_tool("fake_session", {})  # one new session, then reported
    assert server.restarts == 1
    assert await server.call_tool("count", {}) == "counted"
    assert logged(log).count("started") == 2


async def check_timeout(server: MCPServer, log: Path) -> None:
    server.timeout = 0.5
    started = time.perf_counter()
    with pytest.raises(ToolFailed, match=r"did not finish within 0\.5 s"):
        await server.call_tool("sleep", {"seconds": 30})
    elapsed = time.perf_counter() - started
    assert await server.call_tool("count", {}) == "counted"  # the session is still good
    for _ in range(40):
        if "sleep cancelled" in logged(log):
            break
        await asyncio.sleep(0.05)
    assert "sleep cancelled" in logged(log) and elapsed < 2
    figure(f"mcp timeout 0.5s: call ended after {elapsed:.2f}s, server told to cancel")


async def test_a_tool_without_annotations_asks_first(tmp_path: Path) -> None:
    async with fixture(tmp_path / "log", ask="destructive") as server:
        result = await Agent(ScriptedModel([call("count"), "ok"]), tools=[server]).run("go")
        done = await Agent(ScriptedModel([call("read_me"), "ok"]), tools=[server]).run("go")
    assert result.status == "input_required"
    assert "count" not in logged(tmp_path / "log")
    assert done.status == "completed"  # readOnlyHint: no question


@pytest.mark.slow
async def test_server_dying_mid_call_is_reported_not_repeated(tmp_path: Path) -> None:
    log = tmp_path / "log"
    server = fixture(log)
    model = ScriptedModel([call("die"), call("count"), "ok"])
    result = await Agent(model, tools=[server]).run("go")
    died, counted = results(result.messages)
    assert died.is_error and "may or may not have run, so it was not repeated" in died.content
    assert counted.content == "counted" and server.restarts == 1
    assert logged(log).count("die") == 1  # never sent twice


async def test_cancelling_the_run_cancels_the_call_on_the_server(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cancel = asyncio.Event()
    agent = Agent(ScriptedModel([call("sleep", seconds=30), "ok"]), tools=[fixture(log)])
    task = asyncio.create_task(agent.run("go", cancel=cancel))
    for _ in range(200):
        if "sleep started" in logged(log):
            break
        await asyncio.sleep(0.05)
    cancel.set()
    result = await asyncio.wait_for(task, 10)
    assert result.status == "cancelled"
    for _ in range(40):
        if "sleep cancelled" in logged(log):
            break
        await asyncio.sleep(0.05)
    assert "sleep cancelled" in logged(log)


# -- start errors ---------------------------------------------------------------------------


def _script(tmp_path: Path, name: str, body: str, executable: bool = True) -> str:
    path = tmp_path / name
    path.write_text(body)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def start_error(server: MCPServer) -> str:
    with pytest.raises(MCPStartError) as info:
        async with server:
            pass
    message = str(info.value)
    assert server._conn is None
    return message


@pytest.mark.slow
async def test_start_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    noexec = _script(tmp_path, "noexec.sh", "#!/bin/sh\n", executable=False)
    crash = "import sys; sys.stderr.write('boom: bad config\\n'); sys.exit(3)"
    loud = "import sys; sys.stderr.write('z' * 1_000_000 + 'END'); sys.exit(1)"
    garbage = "print('hello, not json'); import sys; sys.exit(0)"
    cases = {
        "not found": (MCPServer.stdio("no-such-mcp-server-xyz"), "was not found"),
        "not executable": (MCPServer.stdio(noexec), "is not executable"),
        "exits with stderr": (MCPServer.stdio(PYTHON, ["-c", crash]), "boom: bad config"),
        "huge stderr": (MCPServer.stdio(PYTHON, ["-c", loud]), "END"),
        "garbage stdout": (MCPServer.stdio(PYTHON, ["-c", garbage]), "stopped during start-up"),
        "never answers": (
            MCPServer.stdio(PYTHON, ["-c", "import time; time.sleep(60)"], connect_timeout=1),
            "did not finish its handshake within 1 s",
        ),
        "nothing listens": (
            MCPServer.http(f"http://127.0.0.1:{free_port()}/mcp", connect_timeout=5),
            "could not be reached",
        ),
    }
    held = 0
    for label, (server, expected) in cases.items():
        message = await start_error(server)
        assert expected in message, (label, message)
        assert len(message) < 5000, label  # a bounded stderr tail
        held += 1
    figure(f"mcp attack class start failures: {len(cases)} tried, {held} gave one clear error")


async def test_a_failed_start_fails_the_run_cleanly() -> None:
    agent = Agent(ScriptedModel(["never"]), tools=[MCPServer.stdio("no-such-mcp-server-xyz")])
    result = await agent.run("go")
    assert result.status == "failed" and "was not found" in (result.error or "")


# -- config ----------------------------------------------------------------------------------


def test_config_in_the_desktop_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_TOKEN", "s3cret")
    servers = parse_config(
        {"mcpServers": {
            "fs": {"command": "npx", "args": ["-y", "pkg", "${HOME}"], "env": {"K": "v"}},
            "api": {"type": "http", "url": "https://x.test/mcp",
                    "headers": {"Authorization": "Bearer ${env:MCP_TOKEN}"}},
            "off": {"command": "x", "disabled": True},
        }},
        timeout=5,
    )  # fmt: skip
    fs, api = servers
    assert (fs.name, fs.prefix, fs.timeout) == ("fs", "fs", 5)
    assert fs.spec.args == ("-y", "pkg", os.environ["HOME"])  # type: ignore[union-attr]
    assert api.spec.headers == {"Authorization": "Bearer s3cret"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "must be an object"),
        ({"mcpServers": []}, "must be an object"),
        ({"mcpServers": {"a": "npx x"}}, "must be an object with a 'command'"),
        ({"mcpServers": {"a": {"args": ["x"]}}}, "must have a 'command'"),
        ({"mcpServers": {"a": {"command": "x", "args": "rm -rf /"}}}, "list of strings"),
        ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, "string values"),
        ({"mcpServers": {"a": {"url": "https://x", "type": "sse"}}}, "not supported"),
        ({"mcpServers": {"a": {"url": "file:///etc/passwd"}}}, "http:// or https://"),
        ({"mcpServers": {"a": {"command": "${NOPE_NOT_SET_X}"}}}, "is not set"),
    ],
)
def test_bad_configs_are_refused_in_one_sentence(data: Any, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        parse_config(data)


def test_server_from_a_command_line() -> None:
    server = server_from_command("npx -y @modelcontextprotocol/server-filesystem './my work'")
    assert server.name == "server-filesystem" and server.prefix == "server-filesystem"
    assert server.spec.args[-1] == "./my work"  # type: ignore[union-attr]
    assert server_from_command("https://h.test/mcp").spec.url == "https://h.test/mcp"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="could not be split"):
        server_from_command("npx 'unclosed")
