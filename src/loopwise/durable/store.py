"""Runs, their events and saved states in the engine's tables (SQLAlchemy Core, sync).

Callers run these methods in threads (``asyncio.to_thread``). Writes that must not race
are single conditional statements, or start with one that locks the run's row, so they
hold on SQLite (one writer at a time) and PostgreSQL (row locks) alike.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..messages import Usage
from .records import (
    TERMINAL,
    Conflict,
    InvalidArguments,
    NotFound,
    PendingApproval,
    RunRecord,
    StoredEvent,
)
from .schema import (
    attempts,
    child_steps,
    create_engine,
    decisions,
    events,
    metadata,
    runs,
    states,
)

__all__ = ["Store"]

Row = dict[str, Any]
Enqueue = Callable[[sa.Connection], None]


class Store:
    """The engine's tables in the DBOS database at ``url``."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = url.startswith("sqlite")

    def migrate(self) -> None:
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that can say ON CONFLICT DO NOTHING in this database's dialect."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    # -- runs ------------------------------------------------------------------------

    def create_run(self, values: Row, enqueue: Enqueue) -> tuple[RunRecord, bool]:
        """Insert a run and enqueue its workflow in one transaction; an existing run with the
        same idempotency key is returned instead (``created`` is then False)."""
        with self.engine.begin() as conn:
            fresh = self.insert(runs).values(**values).on_conflict_do_nothing()
            if conn.execute(fresh.returning(runs.c.id)).first() is not None:
                enqueue(conn)
                return _record(values), True
        key = values.get("idempotency_key")
        row = None
        if key is not None:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(runs).where(runs.c.idempotency_key == key)).first()
        if row is None:  # pragma: no cover - a conflict on a random id
            raise Conflict("The run could not be created; try again.")
        return _record(row._asdict()), False

    def row(self, run_id: str) -> Row | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if found is None else found._asdict()

    def get(self, run_id: str) -> RunRecord:
        row = self.row(run_id)
        if row is None:
            raise NotFound(f"No run has the id {run_id!r}.")
        return _record(row)

    def list_runs(
        self, *, status: str | None, agent: str | None, limit: int, cursor: str | None
    ) -> tuple[list[RunRecord], str | None]:
        """Newest first; the cursor is opaque (the last row's creation time and id)."""
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if status is not None:
            query = query.where(runs.c.status == status)
        if agent is not None:
            query = query.where(runs.c.agent == agent)
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
        after = _encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return [_record(r) for r in rows], after

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

    def progress(
        self,
        run_id: str,
        segment: int,
        changes: Mapping[str, Any],
        new_events: Sequence[Row],
        state: Row | None = None,
    ) -> bool:
        """Record a segment's progress: row changes, events (each seq once) and its end state.

        Nothing is written once the run is terminal or has moved to a later segment (a stale
        or replayed execution); returns whether it was written.
        """
        now = time.time()
        values = dict(changes)
        values["updated_at"] = now
        if "started_at" in values:
            values["started_at"] = sa.func.coalesce(runs.c.started_at, values["started_at"])
        guard = (
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.segment == segment, runs.c.status.not_in(TERMINAL))
            .values(**values)
        )
        with self.engine.begin() as conn:
            if conn.execute(guard).rowcount != 1:
                return False
            if new_events:
                conn.execute(self.insert(events).on_conflict_do_nothing(), list(new_events))
            if state is not None:
                row = {"run_id": run_id, "segment": segment, "state": state}
                conn.execute(self.insert(states).values(**row).on_conflict_do_nothing())
        return True

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

    def cancel(self, run_id: str, finished: Callable[[RunRecord], Row]) -> RunRecord:
        """Mark the run cancelled and append its final event (``finished(record)``)."""
        record, ended = self.end(
            run_id, {"status": "cancelled", "stop_reason": "cancelled"}, finished
        )
        if record is None:
            raise NotFound(f"No run has the id {run_id!r}.")
        if not ended:
            raise Conflict(f"Run {run_id!r} is already {record.status}; it cannot be cancelled.")
        return record

    def end(
        self,
        run_id: str,
        values: Mapping[str, Any],
        finished: Callable[[RunRecord], Row],
        *,
        segment: int | None = None,
        statuses: Sequence[str] | None = None,
    ) -> tuple[RunRecord | None, bool]:
        """End a run that has not ended (or, given ``segment`` and ``statuses``, that is still
        where the caller saw it): set ``values``, clear its pending calls and append its final
        event ``finished(record)`` at the next seq. Returns the run (None if there is no such
        run) and whether this call ended it."""
        now = time.time()
        guard = [runs.c.id == run_id, runs.c.status.not_in(TERMINAL)]
        if statuses is not None:
            guard.append(runs.c.status.in_(statuses))
        if segment is not None:
            guard.append(runs.c.segment == segment)
        change = {**values, "pending": [], "finished_at": now, "updated_at": now}
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(runs).where(*guard).values(**change))
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                return None, False
            record = _record(row._asdict())
            if done.rowcount != 1:
                return record, False
            last = conn.execute(
                sa.select(sa.func.max(events.c.seq)).where(events.c.run_id == run_id)
            ).scalar()
            data = finished(record)
            endings = [*_child_endings(conn, run_id, data), data]
            conn.execute(
                events.insert(),
                [
                    {"run_id": run_id, "seq": (last or 0) + i, "type": d["type"], "data": d}
                    for i, d in enumerate(endings, 1)
                ],
            )
        return record, True

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

    def decide(
        self,
        run_id: str,
        segment: int,
        call_id: str,
        decision: Row,
        complete: Callable[[sa.Connection, Row, dict[str, Row]], None],
    ) -> None:
        """Claim the decision for one pending call; ``complete`` runs, in the same
        transaction, once every pending call of the segment has one."""
        now = time.time()
        lock = (
            sa.update(runs)
            .where(
                runs.c.id == run_id,
                runs.c.status == "input_required",
                runs.c.segment == segment,
            )
            .values(updated_at=now)
        )
        with self.engine.begin() as conn:
            if conn.execute(lock).rowcount != 1:
                raise Conflict(f"Call {call_id!r} of run {run_id!r} is no longer pending.")
            claim = self.insert(decisions).values(
                run_id=run_id, segment=segment, call_id=call_id, decision=decision, created_at=now
            )
            claimed = claim.on_conflict_do_nothing().returning(decisions.c.call_id)
            if conn.execute(claimed).first() is None:
                raise Conflict(f"Call {call_id!r} of run {run_id!r} was already decided.")
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()._asdict()
            made = {
                r.call_id: r.decision
                for r in conn.execute(
                    sa.select(decisions.c.call_id, decisions.c.decision).where(
                        decisions.c.run_id == run_id, decisions.c.segment == segment
                    )
                )
            }
            if len(made) >= len(row["pending"] or []):
                complete(conn, row, made)

    # -- non-idempotent tool calls -----------------------------------------------------

    def attempt_begin(
        self, run_id: str, call_id: str, step_id: int, approved: bool
    ) -> tuple[str, Row | None]:
        """Before a non-idempotent call runs: ``("run", None)``, ``("finished", result)`` (it
        ran, the crash came before its step was checkpointed) or ``("interrupted", None)``
        (it started and never finished: a person must decide whether to run it again).

        A later step may re-run an interrupted call only with a human's approval.
        """
        now = time.time()
        with self.engine.begin() as conn:
            fresh = self.insert(attempts).values(
                run_id=run_id, call_id=call_id, state="started", step_id=step_id, updated_at=now
            )
            if conn.execute(fresh.on_conflict_do_nothing().returning(attempts.c.step_id)).first():
                return "run", None
            row = conn.execute(
                sa.select(attempts).where(
                    attempts.c.run_id == run_id, attempts.c.call_id == call_id
                )
            ).one()
            if row.state == "finished":
                return "finished", row.result
            if approved and row.step_id != step_id:
                again = conn.execute(
                    sa.update(attempts)
                    .where(
                        attempts.c.run_id == run_id,
                        attempts.c.call_id == call_id,
                        attempts.c.state == "started",
                        attempts.c.step_id == row.step_id,
                    )
                    .values(step_id=step_id, updated_at=now)
                )
                if again.rowcount == 1:
                    return "run", None
        return "interrupted", None

    def attempt_finish(self, run_id: str, call_id: str, result: Row) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(attempts)
                .where(attempts.c.run_id == run_id, attempts.c.call_id == call_id)
                .values(state="finished", result=result, updated_at=time.time())
            )

    def prune(self, cutoff: float, *, batch: int = 500) -> list[tuple[str, int]]:
        """Delete up to ``batch`` terminal runs finished before ``cutoff`` (and what they own);
        returns their (id, last segment)."""
        with self.engine.begin() as conn:
            old = [
                (r.id, r.segment)
                for r in conn.execute(
                    sa.select(runs.c.id, runs.c.segment)
                    .where(runs.c.status.in_(TERMINAL), runs.c.finished_at < cutoff)
                    .limit(batch)
                )
            ]
            ids = [i for i, _ in old]
            if ids:
                for table in (events, states, decisions, attempts, child_steps):
                    conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
                conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
        return old


def _child_endings(conn: sa.Connection, run_id: str, final: Row) -> list[Row]:
    """``run_finished`` events for the child runs (agents used as tools) that started in
    this run's stream and never finished: they end as the run does, innermost first."""
    query = (
        sa.select(events.c.type, events.c.data)
        .where(events.c.run_id == run_id, events.c.type.in_(("run_started", "run_finished")))
        .order_by(events.c.seq)
    )
    open_children: dict[str, str] = {}
    for kind, data in conn.execute(query):
        child, parent = data.get("run_id"), data.get("parent_run_id")
        if kind == "run_started" and child != run_id and parent:
            open_children[str(child)] = str(parent)
        elif kind == "run_finished":
            open_children.pop(str(child), None)
    return [
        {
            **final,
            "run_id": child,
            "parent_run_id": parent,
            "step": 0,
            "output": None,
            "usage": asdict(Usage()),
            "cost_usd": 0.0,
            "steps": 0,
            "duration": 0.0,
        }
        for child, parent in reversed(open_children.items())
    ]


def _record(row: Mapping[str, Any]) -> RunRecord:
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
