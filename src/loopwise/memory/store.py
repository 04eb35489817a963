"""The storage interface every vector store implements, and :func:`open_store`.

Stores are blocking (SQLite, psycopg); :class:`~loopwise.memory.Memory` calls them in a
thread. A store returns *candidates* (records with their cosine similarity to the query);
ranking them is :mod:`loopwise.memory.rank`'s job, identical for every store.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..datadir import data_dir
from ..errors import UsageError
from .provenance import UNKNOWN, clean_provenance, is_untrusted, legacy_provenance
from .records import MemoryRecord, Namespace

__all__ = ["COLUMNS", "Candidate", "MemoryStore", "open_store", "record_from_row", "row_of"]

COLUMNS = (
    "id",
    "namespace",
    "agent",
    "key",
    "kind",
    "text",
    "source",
    "untrusted",
    "created_at",
    "updated_at",
    "run_id",
    "task",
    "status",
    "run_ids",
    "merged",
    "meta",
    "provenance",
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record a search found, with its cosine similarity to the query vector."""

    record: MemoryRecord
    cosine: float


class MemoryStore(Protocol):
    """Records and their vectors, scoped by namespace; every method is blocking."""

    backend: str

    def open(self, embedder_name: str, dimensions: int) -> None:
        """Create the tables, or check they were made for this embedder and dimension."""
        ...

    def add(self, record: MemoryRecord, vector: Sequence[float]) -> None: ...

    def update(self, record: MemoryRecord, vector: Sequence[float] | None) -> None:
        """Replace the record with the same id (and its vector, when given)."""
        ...

    def get(self, memory_id: str, namespace: Namespace | None) -> MemoryRecord | None: ...

    def find_run(self, namespace: Namespace, run_id: str) -> MemoryRecord | None: ...

    def list(
        self, namespace: Namespace | None, *, limit: int, offset: int = 0
    ) -> builtins.list[MemoryRecord]:
        """Newest first (by last update)."""
        ...

    def search(
        self, namespace: Namespace, vector: Sequence[float], terms: Sequence[str], n: int
    ) -> builtins.list[Candidate]:
        """The ``n`` nearest by vector plus up to ``n`` matching ``terms`` (keyword)."""
        ...

    def delete(self, memory_id: str, namespace: Namespace | None) -> bool: ...

    def prune(self, namespace: Namespace | None, *, before: float | None, keep: int | None) -> int:
        """Delete records last updated before ``before``, and/or all but the ``keep`` newest
        of each namespace; return how many went."""
        ...

    def count(self, namespace: Namespace | None) -> int: ...

    def namespace_lock(self, namespace: Namespace) -> AbstractContextManager[None]:
        """Held while a near-duplicate is looked for and the memory written, so two
        processes storing the same fact at once merge it instead of storing it twice."""
        ...

    def close(self) -> None: ...


def row_of(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "namespace": record.namespace.id,
        "agent": record.namespace.agent,
        "key": record.namespace.key,
        "kind": record.kind,
        "text": record.text,
        "source": record.source,
        "untrusted": 1 if record.untrusted else 0,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "run_id": record.run_id,
        "task": record.task,
        "status": record.status,
        "run_ids": json.dumps(list(record.run_ids)),
        "merged": record.merged,
        "meta": json.dumps(record.meta, ensure_ascii=False, default=str),
        "provenance": json.dumps(list(record.provenance)),
    }


def _provenance_of(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The row's provenance; a row from before provenance existed gets the legacy one, an
    unreadable one ``unknown``, and a row marked untrusted never reads as trusted."""
    raw, flagged = row.get("provenance"), bool(row["untrusted"])
    if raw is None:
        return legacy_provenance(str(row["source"]), flagged)
    try:
        found = json.loads(raw)
    except (TypeError, ValueError):
        found = None
    provenance = clean_provenance(found if isinstance(found, list) else [None])
    return (*provenance, UNKNOWN) if flagged and not is_untrusted(provenance) else provenance


def record_from_row(row: Mapping[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=str(row["id"]),
        namespace=Namespace(str(row["agent"]), str(row["key"])),
        kind=row["kind"],
        text=str(row["text"]),
        source=str(row["source"]),
        provenance=_provenance_of(row),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        run_id=row["run_id"],
        task=row["task"],
        status=row["status"],
        run_ids=tuple(json.loads(row["run_ids"] or "[]")),
        merged=int(row["merged"]),
        meta=json.loads(row["meta"] or "{}"),
    )


def default_database() -> str:
    """``<data dir>/memory.sqlite`` (or ``LOOPWISE_MEMORY_DATABASE``), created on first use."""
    import os

    configured = os.environ.get("LOOPWISE_MEMORY_DATABASE")
    if configured:
        return configured
    return f"sqlite:///{data_dir() / 'memory.sqlite'}"


def open_store(database: str | None = None) -> MemoryStore:
    """The store for ``database``: ``sqlite:///path`` (sqlite-vec), ``postgresql://...``
    (pgvector when the server has it, else exact ranking in this process), or ``None`` for
    the default. Nothing is opened until the store's ``open``."""
    url = database or default_database()
    if url.startswith("sqlite:///"):
        from .sqlite_store import SqliteStore

        path = Path(url.removeprefix("sqlite:///")).expanduser()
        if not path.name or path.name == ":memory:":
            raise UsageError(f"Memory database {url!r} must name a file: 'sqlite:///path.db'.")
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from .postgres_store import PostgresStore

        return PostgresStore(url.replace("postgresql+psycopg://", "postgresql://", 1))
    raise UsageError(
        f"Memory database {url!r} is not supported; use 'sqlite:///path/memory.sqlite' or "
        "'postgresql://user@host:5432/dbname'."
    )
