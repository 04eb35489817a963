"""A run's events as an AG-UI 1.0 event stream (``GET /v1/runs/{run_id}/agui``).

AG-UI front ends (CopilotKit and others) read server-sent events whose ``data`` is one
AG-UI event in camelCase JSON. Our typed events map onto them: ``run_started`` ->
``RUN_STARTED``; ``text_delta``/``model_text`` -> ``TEXT_MESSAGE_START/CONTENT/END``;
``approval_requested``/``tool_call`` -> ``TOOL_CALL_START/ARGS/END``; ``tool_result`` ->
``TOOL_CALL_RESULT``; ``run_finished`` -> ``RUN_FINISHED`` (outcome ``success``,
``cancelled``, or ``interrupt`` carrying the pending approvals) or ``RUN_ERROR``; every
other event -> ``CUSTOM`` named ``loopwise.<type>``, and a ``STATE_SNAPSHOT`` of the
run's totals after each model response. A paused run ends the stream with the interrupt;
the client answers each interrupt through ``POST /v1/runs/{id}/approvals/{call_id}`` (the
server-side approval) and reads on with ``?after=<last id>``. Each resumption of the
durable run is its own AG-UI run (``runId`` = ``<run id>.<event number>``), all in one
thread (``threadId`` = the run id).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel
from starlette.responses import StreamingResponse

from ..durable.records import TERMINAL, StoredEvent
from .errors import ApiError
from .openapi import error_responses
from .principals import LOCAL, Principal
from .schemas import NO_NUL, ApproveIn, DecisionIn
from .sse import open_stream_slot

if TYPE_CHECKING:
    from .app import RunEngine

__all__ = ["AguiRunIn", "AguiTranslator", "agui_router", "agui_stream", "format_agui"]

INTERRUPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["decision"],
    "properties": {
        "decision": {"enum": ["approve", "reject"]},
        "arguments": {"type": "object", "description": "Edited arguments (approve only)."},
        "reason": {"type": "string", "maxLength": 2000},
    },
}
"""What answers an interrupt: the body of ``POST /v1/runs/{id}/approvals/{call_id}``."""


def _ms(data: dict[str, Any]) -> int:
    return int(float(data.get("time") or time.time()) * 1000)


@dataclass(slots=True)
class AguiTranslator:
    """Turns one run's stored events, in order, into AG-UI events (plain dicts)."""

    thread_id: str
    agui_run: str | None = None
    open_message: str | None = None
    last_message: str | None = None
    announced: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    thought: str = ""

    def translate(self, event: StoredEvent) -> list[dict[str, Any]]:
        """The AG-UI events for one of ours (none for some, several for others)."""
        data, kind = event.data, event.type
        child = data.get("run_id")
        if isinstance(child, str) and child != self.thread_id:
            out = self._child(event, child)
        else:
            handler = _HANDLERS.get(kind)
            out = handler(self, event) if handler is not None else [self._custom(event)]
        for item in out:
            item.setdefault("timestamp", _ms(data))
        return out

    def _child(self, event: StoredEvent, child: str) -> list[dict[str, Any]]:
        """A child run's event (an agent used as a tool): ``SUBAGENT_*``, or the event
        itself marked with ``subagentRunId``; its text arrives whole (deltas skipped)."""
        data, kind = event.data, event.type
        if kind == "run_started":
            parent = str(data.get("parent_run_id") or self.thread_id)
            started: dict[str, Any] = {
                "type": "SUBAGENT_STARTED",
                "subagentRunId": child,
                "name": str(data.get("agent") or "agent"),
                "parentToolCallId": child[len(parent) + 1 :]
                if child.startswith(parent + ".")
                else None,
                "parentSubagentRunId": parent if parent != self.thread_id else None,
            }
            return [{k: v for k, v in started.items() if v is not None}]
        if kind == "run_finished":
            if data.get("status") in ("failed", "incomplete"):
                message = str(data.get("error") or data.get("stop_reason") or data.get("status"))
                return [{"type": "SUBAGENT_ERROR", "subagentRunId": child, "message": message}]
            return [
                {"type": "SUBAGENT_FINISHED", "subagentRunId": child, "result": data.get("output")}
            ]
        if kind == "text_delta":
            return []
        if kind == "model_text":
            message_id = f"{child}.m{event.seq}"
            text = str(data.get("text") or "")
            out: list[dict[str, Any]] = [
                {"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": "assistant"},
                {"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": text},
                {"type": "TEXT_MESSAGE_END", "messageId": message_id},
            ]
            out = out if text else []
        else:
            handler = _HANDLERS.get(kind)
            out = handler(self, event) if handler is not None else [self._custom(event)]
        for item in out:
            item["subagentRunId"] = child
        return out

    # -- handlers -------------------------------------------------------------------------

    def _run_started(self, event: StoredEvent) -> list[dict[str, Any]]:
        self.agui_run = f"{self.thread_id}.{event.seq}"
        self.pending.clear()
        started: dict[str, Any] = {
            "type": "RUN_STARTED",
            "threadId": self.thread_id,
            "runId": self.agui_run,
        }
        parent = event.data.get("parent_run_id")
        if isinstance(parent, str):
            started["parentRunId"] = parent
        return [started]

    def _text_delta(self, event: StoredEvent) -> list[dict[str, Any]]:
        text = str(event.data.get("text") or "")
        out = self._start_message(event) if self.open_message is None else []
        if text:
            out.append(
                {"type": "TEXT_MESSAGE_CONTENT", "messageId": self.open_message, "delta": text}
            )
        return out

    def _model_text(self, event: StoredEvent) -> list[dict[str, Any]]:
        text = str(event.data.get("text") or "")
        self.thought = text
        if self.open_message is not None:  # streamed already: only close it
            return self._end_message()
        if not text:
            return []
        out = self._start_message(event)
        out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": self.open_message, "delta": text})
        return out + self._end_message()

    def _start_message(self, event: StoredEvent) -> list[dict[str, Any]]:
        self.open_message = f"{self.thread_id}.m{event.seq}"
        self.last_message = self.open_message
        return [{"type": "TEXT_MESSAGE_START", "messageId": self.open_message, "role": "assistant"}]

    def _end_message(self) -> list[dict[str, Any]]:
        if self.open_message is None:
            return []
        done = {"type": "TEXT_MESSAGE_END", "messageId": self.open_message}
        self.open_message = None
        return [done]

    def _tool_call(self, event: StoredEvent) -> list[dict[str, Any]]:
        call_id = str(event.data.get("call_id"))
        out = self._end_message()
        if call_id in self.announced:
            return out
        self.announced.add(call_id)
        start: dict[str, Any] = {
            "type": "TOOL_CALL_START",
            "toolCallId": call_id,
            "toolCallName": str(event.data.get("name")),
        }
        if self.last_message is not None:
            start["parentMessageId"] = self.last_message
        args = json.dumps(event.data.get("args") or {}, ensure_ascii=False)
        return [
            *out,
            start,
            {"type": "TOOL_CALL_ARGS", "toolCallId": call_id, "delta": args},
            {"type": "TOOL_CALL_END", "toolCallId": call_id},
        ]

    def _approval_requested(self, event: StoredEvent) -> list[dict[str, Any]]:
        self.pending[str(event.data.get("call_id"))] = {**event.data, "thought": self.thought}
        return [*self._tool_call(event), self._custom(event)]

    def _tool_result(self, event: StoredEvent) -> list[dict[str, Any]]:
        return [
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": f"{self.thread_id}.r{event.seq}",
                "toolCallId": str(event.data.get("call_id")),
                "content": str(event.data.get("content") or ""),
                "role": "tool",
            }
        ]

    def _model_response(self, event: StoredEvent) -> list[dict[str, Any]]:
        snapshot = {
            "step": event.data.get("step"),
            "usage": event.data.get("total_usage"),
            "cost_usd": event.data.get("total_cost_usd"),
        }
        return [self._custom(event), {"type": "STATE_SNAPSHOT", "snapshot": snapshot}]

    def _run_finished(self, event: StoredEvent) -> list[dict[str, Any]]:
        data = event.data
        out = self._end_message()
        status = data.get("status")
        if status in ("failed", "incomplete"):
            message = str(data.get("error") or data.get("stop_reason") or status)
            code = str(data.get("stop_reason") or status)
            return [*out, {"type": "RUN_ERROR", "message": message, "code": code}]
        finished: dict[str, Any] = {
            "type": "RUN_FINISHED",
            "threadId": self.thread_id,
            "runId": self.agui_run or self.thread_id,
            "usage": [_usage(data.get("usage"))],
        }
        if status == "input_required":
            finished["outcome"] = {"type": "interrupt", "interrupts": self._interrupts()}
        elif status == "cancelled":
            finished["outcome"] = {"type": "cancelled"}
        else:
            finished["outcome"] = {"type": "success"}
            finished["result"] = data.get("output")
        return [*out, finished]

    def _interrupts(self) -> list[dict[str, Any]]:
        return [
            {
                "id": call_id,
                "reason": "tool_call_approval",
                "message": f"Approve the call of {p.get('name')!s}? ({p.get('reason')!s})",
                "toolCallId": call_id,
                "responseSchema": INTERRUPT_SCHEMA,
                "metadata": {
                    "tool": p.get("name"),
                    "arguments": p.get("args"),
                    "reason": p.get("reason"),
                    "thought": p.get("thought"),
                    "answer": f"POST /v1/runs/{self.thread_id}/approvals/{call_id}",
                },
            }
            for call_id, p in self.pending.items()
        ]

    def _custom(self, event: StoredEvent) -> dict[str, Any]:
        return {"type": "CUSTOM", "name": f"loopwise.{event.type}", "value": event.data}


_HANDLERS = {
    "run_started": AguiTranslator._run_started,
    "text_delta": AguiTranslator._text_delta,
    "model_text": AguiTranslator._model_text,
    "tool_call": AguiTranslator._tool_call,
    "approval_requested": AguiTranslator._approval_requested,
    "tool_result": AguiTranslator._tool_result,
    "model_response": AguiTranslator._model_response,
    "run_finished": AguiTranslator._run_finished,
}


def _usage(usage: Any) -> dict[str, int]:
    u = usage if isinstance(usage, dict) else {}
    read, write = int(u.get("cache_read_tokens") or 0), int(u.get("cache_write_tokens") or 0)
    tokens_in, tokens_out = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return {
        "inputTokens": tokens_in,
        "outputTokens": tokens_out,
        "totalTokens": tokens_in + tokens_out,
        "cachedInputTokens": read,
        "cacheWriteInputTokens": write,
    }


def format_agui(seq: int, event: dict[str, Any]) -> bytes:
    """One AG-UI event as an SSE message (``id`` = our event number, for resumption)."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {seq}\ndata: {data}\n\n".encode()


async def agui_stream(
    engine: RunEngine,
    run_id: str,
    *,
    after: int = 0,
    poll_seconds: float = 0.2,
    heartbeat_seconds: float = 15.0,
    max_seconds: float = 3600.0,
) -> AsyncIterator[bytes]:
    """The run's AG-UI events from the one after ``after``, until the run ends or pauses
    (a ``RUN_FINISHED`` interrupt); earlier events are replayed into the translator first."""
    translator = AguiTranslator(run_id)
    for old in await _events(engine, run_id, 0, after):
        translator.translate(old)  # the state (open message, pending calls) up to ``after``
    started = quiet = time.monotonic()
    while time.monotonic() - started < max_seconds:
        batch = await engine.events(run_id, after=after, limit=500)
        for event in batch:
            for item in translator.translate(event):
                yield format_agui(event.seq, item)
            after = event.seq
        if batch:
            quiet = time.monotonic()
            continue
        if await _over(engine, run_id, translator):
            # The status and the last events commit together: read once more, so the
            # events that came with it (the run's end, its interrupt) are not lost.
            for event in await _events(engine, run_id, after, sys.maxsize):
                for item in translator.translate(event):
                    yield format_agui(event.seq, item)
            return
        if time.monotonic() - quiet >= heartbeat_seconds:
            quiet = time.monotonic()
            yield b": ping\n\n"
        await asyncio.sleep(poll_seconds)


async def _events(engine: RunEngine, run_id: str, start: int, end: int) -> list[StoredEvent]:
    """Stored events numbered in (start, end]."""
    out: list[StoredEvent] = []
    while start < end:
        batch = await engine.events(run_id, after=start, limit=500)
        out.extend(e for e in batch if e.seq <= end)
        if not batch or batch[-1].seq >= end:
            break
        start = batch[-1].seq
    return out


async def _over(engine: RunEngine, run_id: str, translator: AguiTranslator) -> bool:
    """Whether the stream is done: the run is over, or paused with its interrupt sent."""
    status = (await engine.get(run_id)).status
    return status in TERMINAL or (status == "input_required" and translator.open_message is None)


# -- the route ----------------------------------------------------------------------------

agui_router = APIRouter()


def _principal(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else LOCAL


class AguiResponse(StreamingResponse):
    media_type = "text/event-stream"


@agui_router.get(
    "/v1/runs/{run_id}/agui",
    tags=["runs"],
    summary="Stream a run as AG-UI 1.0 events (SSE)",
    response_class=AguiResponse,
    responses={
        200: {"description": "AG-UI events, one per SSE message (data = camelCase JSON)."},
        **error_responses(404, 422),
    },
)
async def run_agui(
    request: Request,
    run_id: Annotated[str, Path(max_length=200, pattern=NO_NUL)],
    principal: Annotated[Principal, Depends(_principal)],
    after: Annotated[int, Query(ge=0, le=999_999_999)] = 0,
) -> AguiResponse:
    """The run's events as AG-UI events until it ends or waits for approval (interrupt)."""
    from .app import visible_run

    engine = cast("RunEngine", request.app.state.engine)
    await visible_run(engine, run_id, principal)
    return _respond(request, engine, run_id, after)


# -- running and resuming from an AG-UI client -------------------------------------------


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ResumeIn(_Camel):
    """One interrupt's answer: ``payload`` is a decision (``{"decision": "approve"}``,
    edited ``arguments``, a ``reason``); ``cancelled`` rejects the call."""

    interrupt_id: str = Field(max_length=200, pattern=NO_NUL)
    status: Literal["resolved", "cancelled"]
    payload: Any = None


class AguiRunIn(_Camel):
    """AG-UI's ``RunAgentInput`` (the fields used): the last user message starts a run;
    ``resume`` answers the interrupts of the run named by ``threadId``."""

    thread_id: str = Field(max_length=200, pattern=NO_NUL)
    run_id: str = Field(max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    resume: list[ResumeIn] | None = Field(default=None, max_length=100)


_DECISION: TypeAdapter[ApproveIn | Any] = TypeAdapter(DecisionIn)


@agui_router.post(
    "/v1/agents/{agent}/agui",
    tags=["agents"],
    summary="Run an agent, or resume its run, from an AG-UI client (SSE)",
    response_class=AguiResponse,
    responses={
        200: {"description": "AG-UI events until the run ends or waits for approval."},
        **error_responses(404, 409, 413, 422),
    },
)
async def run_agent_agui(
    request: Request,
    agent: Annotated[str, Path(max_length=200, pattern=NO_NUL)],
    body: AguiRunIn,
    principal: Annotated[Principal, Depends(_principal)],
) -> AguiResponse:
    """Start a run with the last user message, or (with ``resume``) decide the pending
    calls of the run ``threadId`` names, then stream it as AG-UI events."""
    from .app import visible_agents, visible_run

    engine = cast("RunEngine", request.app.state.engine)
    if body.resume:
        record = await visible_run(engine, body.thread_id, principal)
        if record.agent != agent:
            raise ApiError(404, "not_found", f"No run of {agent!r} has the id {body.thread_id!r}.")
        after = await _last_seq(engine, record.id)
        for entry in body.resume:
            await _answer(engine, record.id, entry, principal)
        return _respond(request, engine, record.id, after)
    if agent not in visible_agents(engine, principal):
        raise ApiError(404, "not_found", f"No agent is named {agent!r}.")
    record = await engine.submit(
        agent,
        _user_text(body.messages),
        principal=principal.name,
        memory_key=None if principal.admin else principal.memory_key(""),
    )
    return _respond(request, engine, record.id, 0)


def _user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (AG-UI content: text, or a list of text parts)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                str(p.get("text") or "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        if isinstance(content, str) and content.strip():
            return content
    raise ApiError(422, "invalid_request", "The input needs a user message with text.")


async def _answer(engine: RunEngine, run_id: str, entry: ResumeIn, principal: Principal) -> None:
    """Decide one pending call as the API's decide route does (bound to it, checked)."""
    if entry.status == "cancelled":
        decision: Any = _DECISION.validate_python(
            {"decision": "reject", "reason": "The user cancelled the interrupt."}
        )
    else:
        try:
            decision = _DECISION.validate_python(entry.payload)
        except ValueError:
            raise ApiError(
                422,
                "invalid_request",
                f"The answer to interrupt {entry.interrupt_id!r} needs a payload like "
                '{"decision": "approve"} or {"decision": "reject", "reason": "..."}.',
            ) from None
    approve = isinstance(decision, ApproveIn)
    await engine.decide(
        run_id,
        entry.interrupt_id,
        approve=approve,
        arguments=decision.arguments if approve else None,
        reason=decision.reason,
        principal=principal.name,
    )


async def _last_seq(engine: RunEngine, run_id: str) -> int:
    last = 0
    while batch := await engine.events(run_id, after=last, limit=500):
        last = batch[-1].seq
    return last


def _respond(request: Request, engine: RunEngine, run_id: str, after: int) -> AguiResponse:
    settings = request.app.state.settings
    slot = open_stream_slot(request)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in agui_stream(
                engine,
                run_id,
                after=after,
                poll_seconds=settings.poll_seconds,
                heartbeat_seconds=settings.heartbeat_seconds,
                max_seconds=settings.max_stream_seconds,
            ):
                yield chunk
        finally:
            slot.release()

    stream = body()
    weakref.finalize(stream, slot.release)  # also when the stream never starts
    return AguiResponse(stream, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
