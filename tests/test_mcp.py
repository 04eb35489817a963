"""MCP client against the npm reference servers (server-everything, server-filesystem), over
stdio and Streamable HTTP, driven by agents on a ScriptedModel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, tool
from loopwise.events import ToolResulted
from loopwise.mcp import MCPServer
from loopwise.models.testing import ScriptedModel, Turn, call
from mcp_support import (
    EVERYTHING,
    FILESYSTEM,
    children,
    everything_http,
    need,
    node,
    results,
)

pytestmark = pytest.mark.anyio


def everything(**options: Any) -> MCPServer:
    need(EVERYTHING)
    return MCPServer.stdio(node(), [str(EVERYTHING), "stdio"], prefix="ev", **options)


SCRIPT: list[Turn] = [
    call("ev_echo", message="hi"),
    call("ev_get-sum", a=2, b="two"),  # a bad argument: the model sees what was expected
    call("ev_get-sum", a=2, b=3),
    call("ev_get-tiny-image"),
    call("ev_get-structured-content", location="Chicago"),
    call("ev_get-resource-links", count=2),
    call("ev_get-resource-reference", resourceType="Text", resourceId=1),
    "done",
]


def check_script_results(messages: Any) -> None:
    echo, bad, total, image, structured, links, embedded = results(messages)
    assert (echo.content, echo.is_error) == ("Echo: hi", False)
    assert bad.is_error and "field 'b'" in bad.content and "number" in bad.content
    assert "5" in total.content and not total.is_error
    assert len(image.images) == 1 and image.images[0].media_type == "image/png"
    assert '"temperature"' in structured.content
    assert links.content.count("[resource link: demo://resource/") == 2
    assert "[resource demo://resource/" in embedded.content and not embedded.is_error


async def test_stdio_tools_in_an_agent() -> None:
    server = everything()
    started = time.perf_counter()
    result = await Agent(ScriptedModel(list(SCRIPT)), tools=[server]).run("go")
    figure(f"mcp stdio: server-everything run of 7 calls in {time.perf_counter() - started:.2f}s")
    assert result.status == "completed", result.error
    check_script_results(result.messages)
    assert server._conn is None  # stopped when the run ended
    assert children(str(EVERYTHING)) == []


async def test_http_tools_in_an_agent() -> None:
    with everything_http() as (url, _):
        server = MCPServer.http(url, prefix="ev")
        result = await Agent(ScriptedModel(list(SCRIPT)), tools=[server]).run("go")
    assert result.status == "completed", result.error
    check_script_results(result.messages)


async def test_schema_passes_through_unchanged_and_annotations_map_to_policy() -> None:
    async with everything() as server:
        assert server.protocol_version == "2025-11-25"  # initialize handshake
        tools = {t.name: t for t in await server.make_tools()}
        raw = {t.name: t for t in await server.list_tools()}
    echo = tools["ev_echo"]
    assert echo.parameters == raw["echo"].input_schema  # $schema and all, untouched
    assert echo.effects == {"read"} and not echo.requires_approval and echo.idempotent
    assert not echo.trusted
    toggle = tools["ev_toggle-simulated-logging"]  # not read-only, not destructive
    assert not toggle.requires_approval and "write" in toggle.effects and not toggle.idempotent
    gzip = tools["ev_gzip-file-as-resource"]  # open world
    assert {"egress", "external"} <= gzip.effects


async def test_include_exclude_and_prefix() -> None:
    async with everything(include=["get-*", "echo"], exclude=["get-env"]) as server:
        names = {t.name for t in await server.make_tools()}
    assert "ev_echo" in names and "ev_get-sum" in names
    assert "ev_get-env" not in names and not any("toggle" in n for n in names)


async def test_progress_of_a_long_operation() -> None:
    seen: list[tuple[float, float | None]] = []
    server = everything(on_progress=lambda name, p, total, msg: seen.append((p, total)))
    model = ScriptedModel([call("ev_trigger-long-running-operation", duration=1, steps=2), "ok"])
    result = await Agent(model, tools=[server]).run("go")
    assert result.status == "completed"
    assert seen == [(1, 2), (2, 2)]
    assert "completed" in results(result.messages)[0].content.lower()


async def test_elicitation_is_answered_by_the_handler() -> None:
    asked: list[str] = []

    def answer(message: str, schema: Any) -> dict[str, Any]:
        asked.append(message)
        return {"name": "Ada", "check": True, "firstLine": "x", "email": "a@b.c"}

    server = everything(elicitation=answer)
    async with server:
        tools = {t.name for t in await server.make_tools()}
        assert "ev_trigger-elicitation-request" in tools
        out = await server.call_tool("trigger-elicitation-request", {})
    assert asked and "accept" in str(out).lower()


async def test_elicitation_declined_without_a_handler() -> None:
    async with everything() as server:
        names = {t.name for t in await server.list_tools()}
    assert "trigger-elicitation-request" not in names  # nothing advertised, nothing asked


async def test_sampling_is_served_by_the_runs_model_when_enabled() -> None:
    server = everything(sampling=True)
    model = ScriptedModel(
        [call("ev_trigger-sampling-request", prompt="say hi", maxTokens=20), "sampled: hi", "ok"]
    )
    result = await Agent(model, tools=[server]).run("go")
    assert result.status == "completed", result.error
    assert "sampled: hi" in results(result.messages)[0].content
    assert result.usage.requests == 3  # the sampling call counted in the run's usage


async def test_sampling_is_not_offered_by_default() -> None:
    async with everything() as server:
        names = {t.name for t in await server.list_tools()}
    assert "trigger-sampling-request" not in names


async def test_resources_and_prompts_from_python() -> None:
    async with everything() as server:
        res = await server.read_resource("demo://resource/static/document/architecture.md")
        prompt = await server.get_prompt("simple-prompt", {})
    assert res.contents and "architecture" in str(res.contents[0]).lower()
    assert prompt.messages


async def test_filesystem_server(tmp_path: Path) -> None:
    need(FILESYSTEM)
    (tmp_path / "notes.txt").write_text("remember the milk")
    fs = MCPServer.stdio(node(), [str(FILESYSTEM), str(tmp_path)], prefix="fs", ask="never")
    model = ScriptedModel(
        [call("fs_read_text_file", path=str(tmp_path / "notes.txt")),
         call("fs_read_text_file", path="/etc/passwd"),
         "done"]
    )  # fmt: skip
    result = await Agent(model, tools=[fs]).run("go")
    ok, outside = results(result.messages)
    assert "remember the milk" in ok.content
    assert outside.is_error and "root:" not in outside.content


async def test_stdio_server_killed_between_calls_is_restarted() -> None:
    server = everything()

    @tool
    def kill_server() -> str:
        """Kill the MCP server process."""
        for pid in children(str(EVERYTHING)):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)  # between calls (a call sent as it dies is reported, not repeated)
        return "killed"

    model = ScriptedModel(
        [call("ev_echo", message="1"), call("kill_server"), call("ev_echo", message="2"), "ok"]
    )
    result = await Agent(model, tools=[server, kill_server]).run("go")
    first, killed, second = results(result.messages)
    assert (first.content, killed.content, second.content) == ("Echo: 1", "killed", "Echo: 2")
    assert server.restarts == 1


@pytest.mark.slow
async def test_http_server_restarted_between_calls_gets_a_new_session() -> None:
    with everything_http() as (url, proc):
        server = MCPServer.http(url, prefix="ev")
        async with server:
            assert await server.call_tool("echo", {"message": "1"}) == "Echo: 1"
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            proc.kill()
            proc.wait(5)
            with everything_http(port) as _:
                second = await server.call_tool("echo", {"message": "2"})
    assert second == "Echo: 2" and server.restarts == 1


async def test_events_name_the_mcp_tool() -> None:
    events: list[Any] = []
    agent = Agent(ScriptedModel([call("ev_echo", message="e"), "ok"]), tools=[everything()])
    async for event in agent.stream("go"):
        events.append(event)
    [done] = [e for e in events if isinstance(e, ToolResulted)]
    assert done.name == "ev_echo" and done.content == "Echo: e"


async def test_two_runs_share_one_connection_while_held() -> None:
    server = everything()
    async with server:
        pid = children(str(EVERYTHING))
        agents = [
            Agent(ScriptedModel([call("ev_echo", message="a"), "ok"]), tools=[server])
            for _ in range(2)
        ]
        done = await asyncio.gather(agents[0].run("one"), agents[1].run("two"))
        assert [r.status for r in done] == ["completed", "completed"]
        assert children(str(EVERYTHING)) == pid  # the same process served both
    assert children(str(EVERYTHING)) == []


@pytest.mark.slow
def test_bench_runs_quick() -> None:
    need(EVERYTHING)
    import json
    import subprocess
    import sys

    from mcp_support import ROOT

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mcp_overhead.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["stdio_us_per_call"] > 0 and figures["http_us_per_call"] > 0


SECRETS = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL",
           "GITHUB_TOKEN", "LOOPWISE_API_KEY"]  # fmt: skip


async def test_a_stdio_server_gets_none_of_our_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"secret-{name}")
    async with everything(env={"GIVEN": "on purpose"}) as server:
        seen = await server.call_tool("get-env", {})
    leaked = [name for name in SECRETS if f"secret-{name}" in str(seen)]
    assert leaked == [] and "on purpose" in str(seen)
    figure(f"mcp attack class environment leak: {len(SECRETS)} secrets tried, "
           f"{len(SECRETS) - len(leaked)} held")  # fmt: skip
