"""Reading the engine's tables: runs (one, or a page with a cursor), events, saved states.

:class:`~loopwise.durable.store.Store` inherits these queries; the writes live there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .records import (
    Decision,
    InvalidArguments,
    NotFound,
    PendingApproval,
    RunRecord,
    StoredEvent,
)
from .schema import decisions, events, runs, states

__all__ = ["Row", "StoreReads", "record"]

Row = dict[str, Any]


class StoreReads:
    """The read-only queries of :class:`~loopwise.durable.store.Store`."""

    engine: sa.Engine

    def row(self, run_id: str) -> Row | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if found is None else found._asdict()

    def get(self, run_id: str) -> RunRecord:
        """The run with the decisions made on its calls."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if found is None:
                raise NotFound(f"No run has the id {run_id!r}.")
            made = _decisions(conn, [run_id])
        return record(found._asdict(), made.get(run_id, []))

    def request_hash(self, run_id: str) -> str | None:
        """The SHA-256 of the request that created the run with its idempotency key."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(runs.c.request_hash).where(runs.c.id == run_id))
            return found.scalar()

    def list_runs(
        self,
        *,
        status: str | None,
        agent: str | None,
        limit: int,
        cursor: str | None,
        principal: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """Newest first (only ``principal``'s, if given); the cursor is opaque (the last
        row's creation time and id)."""
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if status is not None:
            query = query.where(runs.c.status == status)
        if agent is not None:
            query = query.where(runs.c.agent == agent)
        if principal is not None:
            query = query.where(runs.c.principal == principal)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    runs.c.created_at < created,
                    sa.and_(runs.c.created_at == created, runs.c.id < last_id),
                )
            )
        with self.engine.connect() as conn:
            rows = [r._asdict() for r in conn.execute(query.limit(limit + 1))]
            more = len(rows) > limit
            rows = rows[:limit]
            made = _decisions(conn, [r["id"] for r in rows])
        after = _encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return [record(r, made.get(r["id"], [])) for r in rows], after

    def events(self, run_id: str, *, after: int, limit: int) -> list[StoredEvent]:
        query = (
            sa.select(events.c.seq, events.c.type, events.c.data)
            .where(events.c.run_id == run_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            found = [StoredEvent(run_id, r.seq, r.type, r.data) for r in conn.execute(query)]
            if (
                not found
                and conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None
            ):
                raise NotFound(f"No run has the id {run_id!r}.")
        return found

    def last_seq(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(sa.func.max(events.c.seq)).where(events.c.run_id == run_id)
            ).scalar()
        return int(last or 0)

    def state(self, run_id: str, segment: int | None = None) -> Row | None:
        """The state saved at the end of ``segment`` (default: the latest)."""
        query = sa.select(states.c.state).where(states.c.run_id == run_id)
        if segment is not None:
            query = query.where(states.c.segment == segment)
        query = query.order_by(states.c.segment.desc()).limit(1)
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return found if isinstance(found, dict) else None

    def unfinished(self, *, after: str, limit: int) -> list[Row]:
        """Up to ``limit`` runs that are queued or in progress, by id after ``after``: each
        one's id, status, segment and last update."""
        query = (
            sa.select(runs.c.id, runs.c.status, runs.c.segment, runs.c.updated_at)
            .where(runs.c.status.in_(("queued", "in_progress")), runs.c.id > after)
            .order_by(runs.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query)]


def _decisions(conn: sa.Connection, run_ids: list[str]) -> dict[str, list[Decision]]:
    """The decisions made on these runs' calls, oldest first, by run."""
    if not run_ids:
        return {}
    query = (
        sa.select(decisions)
        .where(decisions.c.run_id.in_(run_ids))
        .order_by(decisions.c.created_at, decisions.c.segment, decisions.c.call_id)
    )
    found: dict[str, list[Decision]] = {}
    for row in conn.execute(query):
        data = row.decision if isinstance(row.decision, dict) else {}
        who = data.get("principal")
        found.setdefault(row.run_id, []).append(
            Decision(
                call_id=row.call_id,
                segment=row.segment,
                approve=data.get("approve") is True,
                principal=who if isinstance(who, str) else None,
                reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
                decided_at=row.created_at,
            )
        )
    return found


def record(row: Mapping[str, Any], made: list[Decision] | None = None) -> RunRecord:
    """The :class:`RunRecord` of a ``runs`` row (with the decisions ``made`` on its calls)."""
    pending = [
        PendingApproval(
            call_id=str(p["call_id"]),
            tool=str(p["tool"]),
            arguments=dict(p["arguments"]),
            reason=str(p.get("reason", "requires_approval")),
        )
        for p in (row.get("pending") or [])
    ]
    return RunRecord(
        id=row["id"],
        agent=row["agent"],
        status=row["status"],
        input=row["input"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model=row.get("model"),
        stop_reason=row.get("stop_reason"),
        detail=row.get("detail"),
        output=row.get("output"),
        error=row.get("error"),
        usage=dict(row.get("usage") or {}),
        cost_usd=float(row.get("cost") or 0.0),
        steps=int(row.get("steps") or 0),
        tool_calls=int(row.get("tool_calls") or 0),
        pending_approvals=pending,
        metadata=dict(row.get("metadata") or {}),
        started_at=row.get("started_at"),
        finished_at=row.get("finished_at"),
        principal=row.get("principal"),
        decisions=list(made or []),
    )


def _encode_cursor(created_at: float, run_id: str) -> str:
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        if not isinstance(run_id, str) or not isinstance(created, (int, float)):
            raise ValueError(cursor)
        return float(created), run_id
    except (ValueError, TypeError):
        raise InvalidArguments(
            f"The cursor {cursor[:40]!r} is not valid; pass the 'next' value of a listing."
        ) from None
