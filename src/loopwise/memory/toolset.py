"""``remember`` and ``recall`` as tools, for agents that manage their own memory."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..tools import Tool, ToolContext, tool
from .provenance import AGENT, seen_before
from .records import Namespace
from .render import render_memories

if TYPE_CHECKING:
    from .memory import Memory

__all__ = ["NAMESPACE_METADATA", "memory_tools"]

NAMESPACE_METADATA = "loopwise.memory_namespace"
"""Set by a memory run in the run's metadata: ``[agent, key]``, so the tools use its scope."""

_CAN_TAINT = "taint" in {f.name for f in fields(ToolContext)}
"""Whether the core lets a tool taint its run (``ctx.taint(source)``): then ``recall`` is a
trusted tool that taints the run with each untrusted memory it returns, as the memory
capability does for the memories it recalls; else every ``recall`` result is untrusted."""


def _namespace(memory: Memory, agent: str | None, metadata: Any) -> Namespace:
    scoped = metadata.get(NAMESPACE_METADATA)
    if isinstance(scoped, list | tuple) and len(scoped) == 2:
        return Namespace(str(scoped[0]), str(scoped[1]))
    return memory.namespace_for(agent, metadata)


def memory_tools(memory: Memory, agent: str | None) -> list[Tool]:
    """The two tools, bound to ``memory``."""

    async def remember(fact: str, ctx: ToolContext[Any]) -> str:
        """Save a fact to long-term memory so later runs can recall it.

        Args:
            fact: One self-contained fact, in a sentence or two (names, numbers, places).
        """
        namespace = _namespace(memory, agent, ctx.metadata)
        # trusted only when the run had seen nothing untrusted before the model made the call
        provenance = (AGENT, *seen_before(ctx))
        record = await memory.remember(
            fact, namespace=namespace, source="agent", provenance=provenance, run_id=ctx.run_id
        )
        merged = " (merged with a similar memory)" if record.merged else ""
        return f"Remembered as {record.id}{merged}."

    async def recall(query: str, ctx: ToolContext[Any]) -> str:
        """Search long-term memory for notes relevant to a query.

        Args:
            query: What to look for, in a few words.
        """
        namespace = _namespace(memory, agent, ctx.metadata)
        hits = await memory.recall(query, namespace=namespace)
        taint = getattr(ctx, "taint", None)
        for h in hits:
            if h.record.untrusted and taint is not None:
                taint(f"memory:{h.record.id}")
        if not hits:
            return "No relevant memories."
        return render_memories(hits)

    # remember's reply is its own text; recall's is as trusted as the memories it returns
    return [
        tool(trusted=True, effects=("external",))(remember),
        tool(trusted=_CAN_TAINT, effects=("read",))(recall),
    ]
