"""How an agent run uses its memory: relevant memories go into the first user message as
quoted data before the first model call, and the finished run leaves a memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..events import Event
from ..loop import RunConfig, RunState, run_steps
from ..messages import TextPart, ToolResultPart, UserMessage
from .records import Namespace
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


async def _inject(memory: Memory, state: RunState, namespace: Namespace) -> bool:
    """Put the recalled memories in the last user message; True if any was untrusted."""
    history = state.history
    index = len(history.messages) - 1
    message = history.messages[index] if history.messages else None
    if not isinstance(message, UserMessage) or any(
        isinstance(p, ToolResultPart) for p in message.parts
    ):
        return False
    query = _task_text(message)
    if not query.strip():
        return False
    hits = await memory.recall(query, namespace=namespace)
    if not hits:
        return False
    block = TextPart(text=render_memories(hits))
    history.replace(index, UserMessage(parts=(block, *message.parts)))
    return any(h.record.untrusted for h in hits)


async def run_with_memory(memory: Memory, cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    """:func:`~loopwise.loop.run_steps` with recall before and a memory record after.

    Memory problems never fail the run: they are logged and the run goes on without.
    """
    namespace = memory.namespace_for(cfg.agent_name, cfg.metadata)
    cfg.metadata = {**cfg.metadata, NAMESPACE_METADATA: [namespace.agent, namespace.key]}
    untrusted = False
    if state.tracker.steps == 0 and not state.decisions:
        try:
            untrusted = await _inject(memory, state, namespace)
        except Exception:
            logger.exception("run %s: recalling memories failed; going on without", cfg.run_id)
    async for event in run_steps(cfg, state):
        yield event
    result = state.result
    if result is None or result.status == "input_required":
        return
    try:
        await memory.record_run(
            result,
            task=_first_task(state),
            namespace=namespace,
            model=cfg.model,
            recalled_untrusted=untrusted,
        )
    except Exception:
        logger.exception("run %s: writing its memory failed", cfg.run_id)
