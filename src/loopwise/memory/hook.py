"""How an agent run uses its memory: relevant memories go into the first user message as
quoted data before the first model call, and the finished run leaves a memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..capabilities import Capability, ModelRequest
from ..events import MemoryRecalled
from ..messages import TextPart, ToolResultPart, UserMessage
from ..result import RunResult
from ..run import RunContext
from .records import Hit, Namespace
from .render import BLOCK_START, render_memories
from .toolset import NAMESPACE_METADATA

if TYPE_CHECKING:
    from .memory import Memory

__all__ = ["MemoryCapability"]

logger = logging.getLogger("loopwise.memory")


def _task_text(message: UserMessage) -> str:
    return "\n".join(
        p.text for p in message.parts if isinstance(p, TextPart) and BLOCK_START not in p.text
    )


def _first_task(run: RunContext) -> str:
    for m in run.state.messages:
        if isinstance(m, UserMessage) and not any(isinstance(p, ToolResultPart) for p in m.parts):
            return _task_text(m)
    return ""


async def _inject(memory: Memory, run: RunContext, namespace: Namespace) -> list[Hit]:
    """Put the recalled memories in the last user message; the memories given."""
    history = run.state.history
    index = len(history.messages) - 1
    message = history.messages[index] if history.messages else None
    if not isinstance(message, UserMessage) or any(
        isinstance(p, ToolResultPart) for p in message.parts
    ):
        return []
    query = _task_text(message)
    if not query.strip():
        return []
    hits: list[Hit] = await run.guard(memory.recall(query, namespace=namespace))
    if hits:
        block = TextPart(text=render_memories(hits))
        history.replace(index, UserMessage(parts=(block, *message.parts)))
    return hits


class MemoryCapability(Capability):
    """A :class:`~loopwise.memory.Memory` in a run: relevant memories go into the first
    user message before the first model call; the finished run leaves a memory (its
    summary call held to the run's budgets). Memory problems never fail the run: they are
    logged and the run goes on without."""

    name = "memory"

    def __init__(self, memory: Memory):
        self.memory = memory
        self._untrusted: dict[str, bool] = {}

    def _namespace(self, run: RunContext) -> Namespace:
        return self.memory.namespace_for(run.state.agent, run.metadata)

    async def start(self, run: RunContext) -> None:
        ns = self._namespace(run)
        run.state.metadata[NAMESPACE_METADATA] = [ns.agent, ns.key]

    async def before_model(self, run: RunContext, request: ModelRequest) -> ModelRequest | None:
        if run.state.steps > 0 or run.run_id in self._untrusted:
            return None
        hits: list[Hit] = []
        try:
            hits = await _inject(self.memory, run, self._namespace(run))
        except Exception:
            logger.exception("run %s: recalling memories failed; going on without", run.run_id)
        flagged = sum(h.record.untrusted for h in hits)
        self._untrusted[run.run_id] = flagged > 0
        for h in hits:
            if h.record.untrusted:
                run.taint(f"memory:{h.record.id}")
        run.emit(
            MemoryRecalled(
                run_id=run.run_id, step=0, ids=[h.record.id for h in hits], untrusted=flagged
            )
        )
        return ModelRequest(run.state.messages, request.tools, request.settings)

    async def end(self, run: RunContext) -> None:
        """Write the run's memory before its ``run_finished`` goes out, so the summary
        call's usage is in the run's totals (and was allowed by its budget)."""
        untrusted = self._untrusted.pop(run.run_id, False)
        if run.state.status == "input_required":
            return
        result = RunResult.of(run.state, run.answer)
        try:
            await self.memory.record_run(
                result,
                task=_first_task(run),
                namespace=self._namespace(run),
                model=run.budgeted_model(),
                recalled_untrusted=untrusted,
            )
        except Exception:
            logger.exception("run %s: writing its memory failed", run.run_id)
