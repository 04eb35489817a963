"""OpenTelemetry GenAI spans for runs, as a capability.

Per run an ``invoke_agent {agent}`` span; under it a ``chat {model}`` span per model call
and an ``execute_tool {tool}`` span per tool call; a child run (an agent used as a tool)
nests under its parent's tool span. The spans wrap the model and the tools, so in a durable
run a replayed step (served from its checkpoint, not redone) makes no second span. Policy
and approval decisions, loop detections and compactions are events on the run's span.
Message content is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
is true (or ``capture_content=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from ..capabilities import Capability
from ..events import Event
from ..messages import (
    AssistantMessage,
    Message,
    ToolDefinition,
    Usage,
    dump_messages,
)
from ..models import Model, ModelSettings, ModelWrapper
from ..run import RunContext
from ..tools import Tool, ToolContext
from . import attributes as attr
from .setup import tracer_for

__all__ = ["Tracing"]

_CTX = "__loopwise_trace_ctx"
_EVENTS = {
    "approval_requested",
    "policy_decision",
    "loop_detected",
    "context_compacted",
    "budget_warning",
    "output_retry",
    "memory_recalled",
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class Tracing(Capability):
    """Trace runs with OpenTelemetry (``Agent(capabilities=[Tracing()])``).

    ``tracer_provider`` defaults to the application's global one (or OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and none is configured); without either, spans
    go nowhere. Child runs inherit it.
    """

    name = "tracing"

    def __init__(self, tracer_provider: Any = None, *, capture_content: bool | None = None):
        self._provider = tracer_provider
        self._tracer: Any = None
        self.capture = (
            _truthy(os.environ.get(attr.CAPTURE_CONTENT_ENV))
            if capture_content is None
            else capture_content
        )
        self._runs: dict[str, Any] = {}  # run id -> its invoke_agent span
        self._tools: dict[str, Any] = {}  # "<run id>.<call id>" -> its execute_tool span

    @property
    def tracer(self) -> Any:
        if self._tracer is None:
            self._tracer = tracer_for(self._provider)
        return self._tracer

    def _context(self, span: Any) -> Any:
        from opentelemetry import trace

        return trace.set_span_in_context(span) if span is not None else None

    # -- the run --------------------------------------------------------------------------

    async def start(self, run: RunContext) -> None:
        from opentelemetry.trace import SpanKind

        state = run.state
        parent = self._tools.get(run.run_id) or self._runs.get(state.parent_run_id or "")
        attributes = {
            attr.OPERATION: attr.OP_AGENT,
            attr.PROVIDER: _provider(run.model),
            attr.REQUEST_MODEL: run.model.model_name,
            attr.CONVERSATION_ID: run.run_id,
            attr.RUN_ID: run.run_id,
        }
        if state.agent:
            attributes[attr.AGENT_NAME] = state.agent
        if state.parent_run_id:
            attributes[attr.PARENT_RUN_ID] = state.parent_run_id
        self._runs[run.run_id] = self.tracer.start_span(
            f"invoke_agent {state.agent or 'agent'}",
            context=self._context(parent),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )

    async def on_event(self, run: RunContext, event: Event) -> None:
        span = self._runs.get(run.run_id)
        if span is None or event.type not in _EVENTS:
            return
        data = {k: v for k, v in event.to_dict().items() if k not in ("run_id", "time", "type")}
        if not self.capture:
            data.pop("args", None)
        span.add_event(
            f"loopwise.{event.type}",
            {
                k: v if isinstance(v, str | bool | int | float) else json.dumps(v, default=str)
                for k, v in data.items()
            },
        )

    async def end(self, run: RunContext) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._runs.pop(run.run_id, None)
        if span is None:
            return
        state = run.state
        _set_usage(span, state.usage)
        span.set_attribute(attr.COST_USD, state.cost_usd)
        span.set_attribute(attr.STATUS, state.status)
        span.set_attribute(attr.STEPS, state.steps)
        span.set_attribute(attr.TOOL_CALLS, state.tool_calls)
        if state.stop_reason:
            span.set_attribute(attr.STOP_REASON, state.stop_reason)
        if state.status == "failed":
            span.set_attribute(attr.ERROR_TYPE, state.stop_reason or "error")
            span.set_status(Status(StatusCode.ERROR, state.error or ""))
        span.end()

    def for_child(self, run_id: str) -> Capability | None:
        return self

    # -- the model and the tools ----------------------------------------------------------

    def wrap_model(self, run: RunContext, model: Model) -> Model:
        if hasattr(model, "stream"):
            return _TracedStreamingModel(model, self, run)
        return _TracedModel(model, self, run)

    def wrap_tool(self, run: RunContext, tool: Tool) -> Tool:
        return _traced_tool(tool, self, run)

    def chat_span(self, run: RunContext, model: Model, settings: ModelSettings) -> Any:
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {
            attr.OPERATION: attr.OP_CHAT,
            attr.PROVIDER: _provider(model),
            attr.REQUEST_MODEL: model.model_name,
            attr.REQUEST_MAX_TOKENS: settings.max_tokens,
        }
        if settings.temperature is not None:
            attributes[attr.REQUEST_TEMPERATURE] = settings.temperature
        return self.tracer.start_span(
            f"chat {model.model_name}",
            context=self._context(self._runs.get(run.run_id)),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def chat_done(
        self, run: RunContext, span: Any, messages: Sequence[Message], reply: AssistantMessage
    ) -> None:
        if reply.model_name:
            span.set_attribute(attr.RESPONSE_MODEL, reply.model_name)
        if reply.finish_reason:
            span.set_attribute(attr.RESPONSE_FINISH_REASONS, [reply.finish_reason])
        _set_usage(span, reply.usage)
        pricer = run.tracker.pricer
        if pricer is not None:
            span.set_attribute(attr.COST_USD, pricer.cost(reply.usage))
        if self.capture:
            span.set_attribute(attr.INPUT_MESSAGES, dump_messages(messages))
            span.set_attribute(attr.OUTPUT_MESSAGES, dump_messages([reply]))
        span.end()


def _provider(model: Model) -> str:
    return attr.PROVIDERS.get(model.provider, model.provider)


def _set_usage(span: Any, usage: Usage) -> None:
    span.set_attribute(attr.INPUT_TOKENS, usage.input_tokens)
    span.set_attribute(attr.OUTPUT_TOKENS, usage.output_tokens)
    span.set_attribute(attr.CACHE_READ_TOKENS, usage.cache_read_tokens)
    span.set_attribute(attr.CACHE_CREATION_TOKENS, usage.cache_write_tokens)


def _failed(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(attr.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
    span.end()


class _TracedModel(ModelWrapper):
    """The run's model with a ``chat`` span around every request."""

    def __init__(self, real: Model, tracing: Tracing, run: RunContext):
        super().__init__(real)
        self._tracing = tracing
        self._run = run

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
    ) -> AssistantMessage:
        span = self._tracing.chat_span(self._run, self.real, settings)
        try:
            reply = await self.real.request(messages, tools, settings)
        except BaseException as exc:
            _failed(span, exc)
            raise
        self._tracing.chat_done(self._run, span, messages, reply)
        return reply


class _TracedStreamingModel(_TracedModel):
    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
    ) -> AsyncIterator[str | AssistantMessage]:
        span = self._tracing.chat_span(self._run, self.real, settings)
        try:
            async for item in self.real.stream(messages, tools, settings):  # type: ignore[attr-defined]
                if isinstance(item, AssistantMessage):
                    self._tracing.chat_done(self._run, span, messages, item)
                yield item
        except BaseException as exc:
            if span.is_recording():
                _failed(span, exc)
            raise


def _traced_tool(real: Tool, tracing: Tracing, run: RunContext) -> Tool:
    """A copy of ``real`` with an ``execute_tool`` span around every call that runs."""

    async def call(**kwargs: Any) -> Any:
        from opentelemetry.trace import SpanKind

        ctx: ToolContext[Any] = kwargs.pop(_CTX)
        attributes: dict[str, Any] = {
            attr.OPERATION: attr.OP_TOOL,
            attr.TOOL_NAME: real.name,
            attr.TOOL_CALL_ID: ctx.call_id,
            attr.TOOL_TYPE: "function",
            attr.TOOL_DESCRIPTION: real.description[:500],
        }
        if tracing.capture:
            attributes[attr.TOOL_ARGUMENTS] = json.dumps(kwargs, default=str)
        span = tracing.tracer.start_span(
            f"execute_tool {real.name}",
            context=tracing._context(tracing._runs.get(run.run_id)),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        key = f"{ctx.run_id}.{ctx.call_id}"
        tracing._tools[key] = span  # a child run started by this call nests under it
        try:
            value = await real.call(kwargs, ctx if real.context_param else None)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            tracing._tools.pop(key, None)
        if tracing.capture:
            span.set_attribute(attr.TOOL_RESULT, str(value)[:10_000])
        span.end()
        return value

    return replace(
        real,
        function=call,
        context_param=_CTX,
        timeout=None,
        max_output_chars=real.max_output_chars,
    )
