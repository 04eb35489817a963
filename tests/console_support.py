"""The service with the console and the AG-UI route mounted, and agents whose texts attack."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loopwise import Agent, tool
from loopwise.messages import Message, ToolDefinition, ToolResultPart, UserMessage
from loopwise.models.testing import FunctionModel, ScriptedCall, call
from loopwise.server import ServerSettings
from server_helpers import LiveServer

PAYLOADS = [
    '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">',
    "<script>window.__pwned=(window.__pwned||0)+1</script>",
    '<svg onload="window.__pwned=(window.__pwned||0)+1"></svg>',
    '"><img src=x onerror=window.__pwned=1>',
    '</pre></details><iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<a href="javascript:window.__pwned=1" id=evil>click</a>',
    "<style>body{display:none}</style><b id=bold>bold?</b>",
]
"""Markup a run's texts carry: each must show as text, none may run or become an element."""

HOSTILE = " ".join(PAYLOADS)


def _results(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


@tool
def fetch_page(url: str) -> str:
    """Fetch a page (returns hostile markup, padded past the console's shortening)."""
    return HOSTILE + " " + "x" * 400


@tool(requires_approval=True, idempotent=False)
def delete_file(path: str) -> str:
    """Delete a file (needs a human's approval)."""
    return f"deleted {path}"


def _hostile(messages: list[Message], tools: list[ToolDefinition]) -> Any:
    """Fetch a page, then ask (with a hostile thought) to delete a file, then answer."""
    done = _results(messages)
    if not done:
        return [f"Thought: fetch {PAYLOADS[1]}", call("fetch_page", url="http://example.test")]
    if len(done) == 1:
        step: list[str | ScriptedCall] = [f"I will delete it {PAYLOADS[0]}"]
        return [*step, call("delete_file", path="notes.txt" + PAYLOADS[3])]
    return f"Done: {done[-1].content} {HOSTILE}"


hostile = Agent(
    FunctionModel(_hostile), tools=[fetch_page, delete_file], name="hostile", system="Be careful."
)


def _helper(messages: list[Message], tools: list[ToolDefinition]) -> Any:
    return f"helper says {PAYLOADS[2]}"


def _boss(messages: list[Message], tools: list[ToolDefinition]) -> Any:
    done = _results(messages)
    if not done:
        return ["Asking my helper.", call("helper", task="help " + PAYLOADS[5])]
    return f"The helper answered: {done[-1].content}"


helper = Agent(FunctionModel(_helper), name="helper", system="Help.")
team = Agent(FunctionModel(_boss), tools=[helper.as_tool("helper")], name="team", system="Lead.")


def agents() -> dict[str, Agent[Any, Any]]:
    from server_agents import agents as base

    return {**base, "hostile": hostile, "team": team}


@contextlib.contextmanager
def console_service(directory: Path, keys: list[str]) -> Iterator[LiveServer]:
    """DurableEngine on SQLite behind uvicorn, with ``mount_console`` applied."""
    from loopwise.durable import DurableEngine
    from loopwise.server import create_app
    from loopwise.server.console import mount_console

    engine = DurableEngine(
        agents(), database=f"sqlite:///{directory / 'runs.sqlite'}", poll_seconds=0.05
    )
    app = create_app(
        engine,
        api_keys=keys,
        require_auth=bool(keys),
        settings=ServerSettings(heartbeat_seconds=0.2, poll_seconds=0.02),
    )
    mount_console(app)
    with LiveServer(app) as server:
        yield server
