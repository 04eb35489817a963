"""How an agent run uses its memory: relevant memories go into the first user message as
quoted data before the first model call, and the finished run leaves a memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ..context import estimate_tokens, tools_tokens
from ..errors import ModelError
from ..events import Event, MemoryRecalled, RunFinished
from ..limits import BudgetTracker, Stop
from ..loop import RunConfig, RunState, run_steps
from ..messages import (
    AssistantMessage,
    Message,
    TextPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
)
from ..models import Model, ModelSettings
from .records import Hit, Namespace
from .render import BLOCK_START, render_memories
from .toolset import NAMESPACE_METADATA

if TYPE_CHECKING:
    from .memory import Memory

__all__ = ["run_with_memory"]

logger = logging.getLogger("loopwise.memory")


def _task_text(message: UserMessage) -> str:
    return "\n".join(
        p.text for p in message.parts if isinstance(p, TextPart) and BLOCK_START not in p.text
    )


def _first_task(state: RunState) -> str:
    for m in state.history.messages:
        if isinstance(m, UserMessage) and not any(isinstance(p, ToolResultPart) for p in m.parts):
            return _task_text(m)
    return ""


async def _inject(memory: Memory, state: RunState, namespace: Namespace) -> list[Hit]:
    """Put the recalled memories in the last user message; the memories given."""
    history = state.history
    index = len(history.messages) - 1
    message = history.messages[index] if history.messages else None
    if not isinstance(message, UserMessage) or any(
        isinstance(p, ToolResultPart) for p in message.parts
    ):
        return []
    query = _task_text(message)
    if not query.strip():
        return []
    hits = await memory.recall(query, namespace=namespace)
    if hits:
        block = TextPart(text=render_memories(hits))
        history.replace(index, UserMessage(parts=(block, *message.parts)))
    return hits


async def run_with_memory(memory: Memory, cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    """:func:`~loopwise.loop.run_steps` with recall before and a memory record after.

    Memory problems never fail the run: they are logged and the run goes on without.
    """
    namespace = memory.namespace_for(cfg.agent_name, cfg.metadata)
    cfg.metadata = {**cfg.metadata, NAMESPACE_METADATA: [namespace.agent, namespace.key]}
    untrusted = False
    if state.tracker.steps == 0 and not state.decisions:
        hits: list[Hit] = []
        try:
            hits = await _inject(memory, state, namespace)
        except Exception:
            logger.exception("run %s: recalling memories failed; going on without", cfg.run_id)
        flagged = sum(h.record.untrusted for h in hits)
        untrusted = flagged > 0
        yield MemoryRecalled(
            run_id=cfg.run_id, step=0, ids=[h.record.id for h in hits], untrusted=flagged
        )
    async for event in run_steps(cfg, state):
        if isinstance(event, RunFinished):
            event = await _record(memory, cfg, state, namespace, untrusted, event)
        yield event


async def _record(
    memory: Memory,
    cfg: RunConfig,
    state: RunState,
    namespace: Namespace,
    untrusted: bool,
    event: RunFinished,
) -> RunFinished:
    """Write the run's memory before its ``run_finished`` goes out, so the summary call's
    usage is in the run's totals (and was allowed by its budget)."""
    result = state.result
    if result is None or result.status == "input_required":
        return event
    model = _BudgetedModel(cfg.model, state.tracker)
    try:
        await memory.record_run(
            result,
            task=_first_task(state),
            namespace=namespace,
            model=model,
            recalled_untrusted=untrusted,
        )
    except Exception:
        logger.exception("run %s: writing its memory failed", cfg.run_id)
    if not model.called:
        return event
    result.usage, result.cost_usd = state.tracker.usage, state.tracker.cost_usd
    return replace(event, usage=result.usage, cost_usd=result.cost_usd)


class _BudgetedModel:
    """The run's model for the summary call: the run's budgets are checked before it and
    its usage is added to the run's (and a parent run's) totals."""

    def __init__(self, real: Model, tracker: BudgetTracker):
        self.real = real
        self.tracker = tracker
        self.called = False

    @property
    def provider(self) -> str:
        return self.real.provider

    @property
    def model_name(self) -> str:
        return self.real.model_name

    @property
    def context_window(self) -> int | None:
        return self.real.context_window

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
    ) -> AssistantMessage:
        estimate = sum(estimate_tokens(m) for m in messages) + tools_tokens(tools)
        verdict = self.tracker.check_model_call(estimate, settings.max_tokens, step=False)
        if isinstance(verdict, Stop):
            raise ModelError(f"no budget left for the memory summary ({verdict.detail})")
        try:
            reply = await self.real.request(
                messages, tools, replace(settings, max_tokens=verdict.max_tokens)
            )
        except BaseException:
            self.tracker.release()
            raise
        self.called = True
        self.tracker.record(reply.usage)
        return reply
