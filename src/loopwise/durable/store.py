"""Runs, their events and saved states in the engine's tables (SQLAlchemy Core, sync).

Callers run these methods in threads (``asyncio.to_thread``). Writes that must not race
are single conditional statements, or start with one that locks the run's row, so they
hold on SQLite (one writer at a time) and PostgreSQL (row locks) alike. The queries that
only read live in :mod:`loopwise.durable.reads`; :class:`Store` inherits them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..messages import Usage
from .reads import Row, StoreReads
from .reads import record as _record
from .records import TERMINAL, Conflict, NotFound, RunRecord
from .schema import (
    attempts,
    child_steps,
    create_engine,
    decisions,
    events,
    metadata,
    runs,
    states,
    upgrade,
)

__all__ = ["Store"]

Enqueue = Callable[[sa.Connection], None]


class Store(StoreReads):
    """The engine's tables in the DBOS database at ``url``."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = url.startswith("sqlite")

    def migrate(self) -> None:
        try:
            metadata.create_all(self.engine)
        except sa.exc.DBAPIError:  # another process created them at the same moment
            metadata.create_all(self.engine)
        upgrade(self.engine)  # columns that tables of earlier versions lack

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

    def prune(
        self, cutoff: float, *, batch: int = 500, agents: Sequence[str] | None = None
    ) -> list[tuple[str, int]]:
        """Delete up to ``batch`` terminal runs finished before ``cutoff`` (of ``agents``
        only, when given) and what they own; returns their (id, last segment)."""
        query = sa.select(runs.c.id, runs.c.segment).where(
            runs.c.status.in_(TERMINAL), runs.c.finished_at < cutoff
        )
        if agents is not None:
            query = query.where(runs.c.agent.in_(list(agents)))
        with self.engine.begin() as conn:
            old = [(r.id, r.segment) for r in conn.execute(query.limit(batch))]
            ids = [i for i, _ in old]
            if ids:
                for table in (events, states, decisions, attempts, child_steps):
                    conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
                _prune_leases(conn, ids)
                conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
        return old


def _prune_leases(conn: sa.Connection, ids: list[str]) -> None:
    """Delete the runs' leases and late results (the tables exist once a worker ran)."""
    from .fencing import late_results, leases

    inspector = sa.inspect(conn)
    for table in (leases, late_results):
        if inspector.has_table(table.name):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))


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
