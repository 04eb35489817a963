"""The :class:`Memory` facade: remember, recall, record finished runs, forget, prune."""

from __future__ import annotations

import asyncio
import builtins
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UsageError
from ..models import Model
from ..result import RunResult
from .embed import Embedder, LocalEmbedder
from .provenance import (
    AGENT,
    FLAG_INSTRUCTIONS,
    RECALLED,
    USER,
    input_sources,
    run_sources,
    tool_result_sources,
)
from .rank import MemorySettings, rank, terms_of
from .records import (
    MAX_TEXT_CHARS,
    Hit,
    MemoryKind,
    MemoryRecord,
    Namespace,
    looks_like_instructions,
    new_memory_id,
)
from .store import Candidate, MemoryStore, open_store
from .summary import deterministic_summary, model_summary

if TYPE_CHECKING:
    from .hook import MemoryCapability

__all__ = ["KEY_METADATA", "Memory"]

_MAX_INT = 2**63 - 1  # the stores' integers are 64-bit

KEY_METADATA = "memory_key"
"""The run-metadata entry naming the user or tenant whose memories a run uses."""


class Memory:
    """Long-term memory for agents: a vector store plus an embedder, scoped by namespace.

    ``database``: ``sqlite:///path`` (sqlite-vec; default ``<data dir>/memory.sqlite``) or
    ``postgresql://...``. ``embedder`` defaults to the local all-MiniLM-L6-v2.
    ``summarize="model"`` has the run's model write the memory of a finished run (the
    deterministic summary is used when it fails); ``"deterministic"`` never asks it.
    Give it to ``Agent(memory=...)``: runs then start with relevant memories and leave one.
    Nothing is opened or loaded until first use.
    """

    def capability(self) -> MemoryCapability:
        """This memory as a run capability (what ``Agent(memory=...)`` adds)."""
        from .hook import MemoryCapability

        return MemoryCapability(self)

    def __init__(
        self,
        database: str | None = None,
        *,
        embedder: Embedder | None = None,
        store: MemoryStore | None = None,
        settings: MemorySettings | None = None,
        summarize: Literal["model", "deterministic"] = "model",
    ):
        if summarize not in ("model", "deterministic"):
            raise UsageError(f"summarize must be 'model' or 'deterministic', not {summarize!r}.")
        if store is not None and database is not None:
            raise UsageError("Give Memory a database or a store, not both.")
        self.embedder: Embedder = embedder or LocalEmbedder()
        self.store: MemoryStore = store or open_store(database)
        self.settings = settings or MemorySettings()
        self.summarize = summarize
        self._opened = False
        self._lock = threading.Lock()
        self._write = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------

    def _open(self) -> MemoryStore:
        with self._lock:
            if not self._opened:
                self.store.open(self.embedder.name, self.embedder.dimensions)
                self._opened = True
        return self.store

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def work() -> Any:
            self._open()
            return fn(*args, **kwargs)

        return await asyncio.to_thread(work)

    async def _embed(self, text: str) -> builtins.list[float]:
        vectors: builtins.list[list[float]] = await asyncio.to_thread(self.embedder.embed, [text])
        return vectors[0]

    @staticmethod
    def namespace_for(agent: str | None, metadata: Mapping[str, Any] | None = None) -> Namespace:
        """The namespace of a run: its agent's name and the ``memory_key`` metadata entry."""
        key = (metadata or {}).get(KEY_METADATA, "")
        if not isinstance(key, str):
            raise UsageError(f"Run metadata {KEY_METADATA!r} must be a string, not {key!r}.")
        return Namespace(agent or "default", key)

    # -- writing ------------------------------------------------------------------------

    async def remember(
        self,
        text: str,
        *,
        namespace: Namespace,
        kind: MemoryKind = "fact",
        source: str = "user",
        provenance: Sequence[str] | None = None,
        run_id: str | None = None,
        task: str | None = None,
        status: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> MemoryRecord:
        """Store ``text``; a near-duplicate of the same kind and trust in the namespace
        (cosine at or above ``settings.duplicate_similarity``) is updated instead.

        ``provenance`` (default: ``("user",)``, the application or user stored it) is what
        makes a memory trusted or not; store a tool's output with ``("user", "tool:NAME")``.
        Text written by anything but the user that reads like instructions gets
        ``flag:instructions`` as well (wording only ever adds distrust)."""
        text = _storable(text).strip()
        task = None if task is None else _storable(task)
        if len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        provenance = tuple(provenance) if provenance is not None else (USER,)
        if provenance[:1] != (USER,) and looks_like_instructions(text):
            provenance = (*provenance, FLAG_INSTRUCTIONS)
        now = time.time()
        record = MemoryRecord(
            id=new_memory_id(),
            namespace=namespace,
            kind=kind,
            text=text,
            source=source,
            provenance=provenance,
            created_at=now,
            updated_at=now,
            run_id=run_id,
            task=task,
            status=status,
            run_ids=(run_id,) if run_id else (),
            meta=dict(meta or {}),
        )
        vector = await self._embed(text)
        return await self._call(self._store_record, record, vector)  # type: ignore[no-any-return]

    def _store_record(self, record: MemoryRecord, vector: builtins.list[float]) -> MemoryRecord:
        with self._write, self.store.namespace_lock(record.namespace):
            twin = self._twin(record, vector)
            if twin is None:
                self.store.add(record, vector)
                return record
            merged = _merge(twin, record)
            self.store.update(merged, vector)
            return merged

    def _twin(self, record: MemoryRecord, vector: builtins.list[float]) -> MemoryRecord | None:
        """The memory ``record`` updates: the same run's, else a near-duplicate of the same
        kind and trust (untrusted text never overwrites a trusted memory, nor the reverse)."""
        if record.kind == "run" and record.run_id:
            same = self.store.find_run(record.namespace, record.run_id)
            if same is not None:
                return same
        found: builtins.list[Candidate] = self.store.search(record.namespace, vector, [], 3)
        for c in sorted(found, key=lambda c: -c.cosine):
            if (
                c.record.kind == record.kind
                and c.record.untrusted == record.untrusted
                and c.cosine >= self.settings.duplicate_similarity
            ):
                return c.record
        return None

    async def record_run(
        self,
        result: RunResult[Any],
        *,
        task: str,
        namespace: Namespace,
        model: Model | None = None,
        recalled_untrusted: bool = False,
    ) -> MemoryRecord:
        """Write the memory of a finished run (model summary, else the deterministic one).

        Its provenance is ``agent`` plus every untrusted source the run saw (see
        :func:`_seen_by`), and ``recalled`` when ``recalled_untrusted``."""
        seen = _seen_by(result)
        if recalled_untrusted:
            seen.add(RECALLED)
        text: str | None = None
        source = "deterministic"
        if self.summarize == "model" and model is not None:
            text = await model_summary(model, task, result)
            source = "model" if text else source
        if not text:
            text = deterministic_summary(task, result)
        return await self.remember(
            text,
            namespace=namespace,
            kind="run",
            source=source,
            provenance=(AGENT, *sorted(seen)),
            run_id=result.run_id,
            task=task[:1000],
            status=result.status,
        )

    # -- reading ------------------------------------------------------------------------

    async def recall(
        self,
        query: str,
        *,
        namespace: Namespace,
        k: int | None = None,
        threshold: float | None = None,
    ) -> builtins.list[Hit]:
        """The memories of ``namespace`` most relevant to ``query``, best first."""
        if not query.strip():
            raise UsageError("The memory query is empty; give some text to search for.")
        k = self.settings.k if k is None else k
        threshold = self.settings.threshold if threshold is None else threshold
        if k < 1:
            raise UsageError(f"k must be at least 1, not {k}.")
        if not 0.0 <= threshold <= 1.0:  # also refuses NaN, which every score would pass
            raise UsageError(f"threshold must be between 0 and 1, not {threshold}.")
        query = _storable(query)
        terms = terms_of(query)
        vector = await self._embed(query)
        n = max(self.settings.candidates, k)
        found = await self._call(self.store.search, namespace, vector, terms, n)
        return rank(found, terms, self.settings, k=k, threshold=threshold)

    async def get(self, memory_id: str, namespace: Namespace | None = None) -> MemoryRecord | None:
        """One memory by id (``None`` if absent, or not in ``namespace`` when given)."""
        if "\x00" in memory_id:  # no id has one; PostgreSQL cannot even compare it
            return None
        return await self._call(self.store.get, memory_id, namespace)  # type: ignore[no-any-return]

    async def list(
        self, namespace: Namespace | None = None, *, limit: int = 50, offset: int = 0
    ) -> builtins.list[MemoryRecord]:
        """Memories, newest first; every namespace's when ``namespace`` is ``None``."""
        if not (1 <= limit <= _MAX_INT and 0 <= offset <= _MAX_INT):
            raise UsageError(f"limit must be ≥ 1 and offset ≥ 0, not {limit} and {offset}.")
        return await self._call(self.store.list, namespace, limit=limit, offset=offset)  # type: ignore[no-any-return]

    async def count(self, namespace: Namespace | None = None) -> int:
        return await self._call(self.store.count, namespace)  # type: ignore[no-any-return]

    # -- deleting -----------------------------------------------------------------------

    async def forget(self, memory_id: str, namespace: Namespace | None = None) -> bool:
        """Delete a memory (row, keyword index and vector); False when there was none."""
        if "\x00" in memory_id:
            return False
        return await self._call(self.store.delete, memory_id, namespace)  # type: ignore[no-any-return]

    async def prune(
        self,
        namespace: Namespace | None = None,
        *,
        older_than: float | None = None,
        keep: int | None = None,
    ) -> int:
        """Delete memories not updated for ``older_than`` seconds and/or all but the
        ``keep`` newest per namespace; return how many were deleted."""
        if older_than is None and keep is None:
            raise UsageError("prune needs older_than (seconds) or keep (a count), or both.")
        # NaN is refused too: PostgreSQL orders it above every time, so all would go.
        if (older_than is not None and not 0 <= older_than < math.inf) or (
            keep is not None and not 0 <= keep <= _MAX_INT
        ):
            raise UsageError(
                f"older_than and keep must be finite and not negative, not {older_than} and {keep}."
            )
        before = None if older_than is None else time.time() - older_than
        return await self._call(self.store.prune, namespace, before=before, keep=keep)  # type: ignore[no-any-return]

    def tools(self, agent: str | None = None) -> builtins.list[Any]:
        """``remember(fact)`` and ``recall(query)`` as tools, for agents that manage their
        memory themselves (namespace: the run's; ``agent`` names it outside a memory run)."""
        from .toolset import memory_tools

        return memory_tools(self, agent)

    def close(self) -> None:
        """Close the store's connection."""
        self.store.close()
        self._opened = False


def _seen_by(result: RunResult[Any]) -> set[str]:
    """The kinds of untrusted content a finished run had in its context: what its state
    recorded, documents and images given as input; and every tool with a result when there
    is no state or the run was cut short (results kept on the way out may not be recorded)."""
    state = result.state
    seen = input_sources(result.messages)
    if state is not None:
        seen |= run_sources(state.untrusted)
    if state is None or result.status != "completed":
        seen |= tool_result_sources(result.messages)
    return seen


def _storable(text: str) -> str:
    """``text`` that every store and embedder takes: NUL (PostgreSQL refuses it) and lone
    surrogates (not UTF-8; a JSON ``"\\ud800"`` gives one) become U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _merge(old: MemoryRecord, new: MemoryRecord) -> MemoryRecord:
    """A near-duplicate keeps the old id and age of first sight, takes the newer text, and
    has the provenance of both (so it stays untrusted if either was)."""
    run_ids = tuple(dict.fromkeys((*old.run_ids, *new.run_ids)))
    return MemoryRecord(
        id=old.id,
        namespace=old.namespace,
        kind=old.kind,
        text=new.text,
        source=new.source,
        provenance=(*new.provenance, *old.provenance),
        created_at=old.created_at,
        updated_at=new.updated_at,
        run_id=new.run_id or old.run_id,
        task=new.task or old.task,
        status=new.status or old.status,
        run_ids=run_ids,
        merged=old.merged + (0 if new.run_id and new.run_id == old.run_id else 1),
        meta={**old.meta, **new.meta},
    )
