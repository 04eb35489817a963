"""Agents for the team and image tests of the durable engine and the service, importable by
worker subprocesses (``LW_AGENTS=team_agents``).

``lead`` asks its child agent ``researcher`` (an agent used as a tool), then writes a
note, then answers with both observations. The task is ``"<tag> <turns> <seconds>"``: the
child digs ``turns`` times, each dig taking ``seconds``. ``viewer`` takes a snapshot (a
tool returning text and a real PNG), asks for approval to delete something, then answers
saying what images its last request held. Every model call is logged to
``$LW_COUNT_DIR/calls.log`` (``lead <tag> <turn>``, ``child <tag> <turn>``,
``viewer <tag> <turn> images=<n> sha=<digest>``) and can be armed to block once, as in
:mod:`durable_agents`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from typing import Any

from durable_agents import _block_if_armed, log, note
from loopwise import Agent, ToolContext, tool
from loopwise.messages import (
    AssistantMessage,
    ImagePart,
    Message,
    TextPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
)
from loopwise.models.testing import FunctionModel, ScriptedCall, Turn


def _task(messages: list[Message]) -> list[str]:
    first = next(m for m in messages if isinstance(m, UserMessage))
    part = first.parts[0]
    assert isinstance(part, TextPart)
    return part.text.split()


def _turn(messages: list[Message]) -> int:
    return sum(1 for m in messages if isinstance(m, AssistantMessage))


def _results(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


@tool
async def dig(spot: str, seconds: float, ctx: ToolContext[None]) -> str:
    """Dig at a spot (takes a while)."""
    log(f"dig {ctx.call_id}")
    await asyncio.sleep(seconds)
    return f"dug {spot}"


async def researcher_model(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    tag, turns, seconds = _task(messages)
    turn = _turn(messages)
    log(f"child {tag} {turn}")
    await _block_if_armed(f"child-{tag}-{turn}")
    if turn < int(turns):
        args = {"spot": f"{tag}.{turn}", "seconds": float(seconds)}
        return ScriptedCall("dig", args, id=f"{tag}-c{turn}")
    return f"{tag} found {turns} things"


async def lead_model(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    tag, turns, seconds = _task(messages)
    turn = _turn(messages)
    log(f"lead {tag} {turn}")
    await _block_if_armed(f"lead-{tag}-{turn}")
    if turn == 0:
        task = f"{tag} {turns} {seconds}"
        return ["asking the researcher", ScriptedCall("researcher", {"task": task}, id=f"{tag}-r")]
    if turn == 1:
        return ScriptedCall("note", {"text": f"{tag}.after"}, id=f"{tag}-n")
    return f"{tag} team: " + " | ".join(r.content for r in _results(messages))


def png_bytes() -> bytes:
    """A small real PNG (Pillow): 6 by 4 pixels, red and blue halves."""
    from PIL import Image

    img = Image.new("RGB", (6, 4), (255, 0, 0))
    img.paste((0, 0, 255), (3, 0, 6, 4))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def png_digest() -> str:
    return hashlib.sha256(png_bytes()).hexdigest()[:16]


@tool
async def snapshot(ctx: ToolContext[None]) -> list[Any]:
    """Take a picture of the screen."""
    log(f"snapshot {ctx.call_id}")
    data = base64.b64encode(png_bytes()).decode()
    return ["the screen", ImagePart(media_type="image/png", data=data)]


@tool(requires_approval=True)
async def erase(path: str) -> str:
    """Erase a file (needs approval)."""
    return f"erased {path}"


async def viewer_model(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    tag = _task(messages)[0]
    turn = _turn(messages)
    images = [i for r in _results(messages) for i in r.images]
    digests = ",".join(hashlib.sha256(base64.b64decode(i.data)).hexdigest()[:16] for i in images)
    log(f"viewer {tag} {turn} images={len(images)} sha={digests or '-'}")
    await _block_if_armed(f"viewer-{tag}-{turn}")
    if turn == 0:
        return ScriptedCall("snapshot", {}, id=f"{tag}-s")
    if turn == 1 and "erase" in _task(messages):
        return ScriptedCall("erase", {"path": f"{tag}.png"}, id=f"{tag}-e")
    return f"{tag} saw {len(images)} image(s)"


researcher = Agent(
    FunctionModel(researcher_model),
    tools=[dig],
    name="researcher",
    system="Dig for facts.",
    max_steps=100,
)
lead = Agent(
    FunctionModel(lead_model),
    tools=[researcher.as_tool(), note],
    name="lead",
    system="Lead a small team.",
)
viewer = Agent(FunctionModel(viewer_model), tools=[snapshot, erase], name="viewer")

agents: dict[str, Agent[Any, Any]] = {"lead": lead, "viewer": viewer}
