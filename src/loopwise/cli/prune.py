"""``loopwise runs prune``: delete old finished runs from the database, scoped and asked.

One database can hold the runs of several served agent modules and of the CLI, so prune
says first what it would delete (per agent) and deletes only after a ``y`` on the
terminal or ``--yes``; ``--agent NAME`` (repeatable) limits it to those agents.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import typer

from .display import printable
from .store import StoreError, open_store

__all__ = ["prune_runs"]

EXIT_ERROR = 1
EXIT_USAGE = 2
BATCH = 500


def _echo(text: str, err: bool = False) -> None:
    typer.echo(printable(text), err=err)


def _scope(agents: Sequence[str], cutoff: float) -> list[Any]:
    from ..durable.records import TERMINAL
    from ..durable.schema import runs

    where = [runs.c.status.in_(TERMINAL), runs.c.finished_at < cutoff]
    if agents:
        where.append(runs.c.agent.in_(list(agents)))
    return where


def _counts(store: Any, agents: Sequence[str], cutoff: float) -> dict[str, int]:
    from ..durable.schema import runs

    query = (
        sa.select(runs.c.agent, sa.func.count())
        .where(*_scope(agents, cutoff))
        .group_by(runs.c.agent)
        .order_by(runs.c.agent)
    )
    with store.engine.connect() as conn:
        return {str(agent): int(n) for agent, n in conn.execute(query)}


def _delete_batch(store: Any, agents: Sequence[str], cutoff: float) -> list[tuple[str, int]]:
    """Delete up to ``BATCH`` runs in scope with what they own; their (id, last segment).
    The store's own prune does it (scoped once it takes ``agents``); until then a scoped
    prune deletes the same tables here."""
    if not agents:
        return list(store.prune(cutoff, batch=BATCH))
    if "agents" in inspect.signature(store.prune).parameters:
        return list(store.prune(cutoff, batch=BATCH, agents=list(agents)))
    from ..durable import store as store_module
    from ..durable.schema import attempts, child_steps, decisions, events, runs, states

    with store.engine.begin() as conn:
        found = conn.execute(
            sa.select(runs.c.id, runs.c.segment).where(*_scope(agents, cutoff)).limit(BATCH)
        )
        old = [(r.id, int(r.segment)) for r in found]
        ids = [i for i, _ in old]
        if ids:
            for table in (events, states, decisions, attempts, child_steps):
                conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
            leases = getattr(store_module, "_prune_leases", None)  # leases, late results
            if leases is not None:
                leases(conn, ids)
            conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
    return old


async def _forget_workflows(url: str, gone: list[tuple[str, int]]) -> None:
    """Delete the DBOS records of the deleted runs' segments (service runs have them)."""
    from ..durable import dbos_runtime
    from ..durable.workflow import workflow_id

    ids = [workflow_id(r, s) for r, last in gone for s in range(last + 1)]
    client = await asyncio.to_thread(dbos_runtime.client, url)
    try:
        await client.delete_workflows_async(ids)
    finally:
        await asyncio.to_thread(client.destroy)


def _confirmed(total: int, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        _echo(
            f"error: {total} run{'s' if total != 1 else ''} would be deleted; add --yes to "
            "delete them (or --agent NAME to choose whose).",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    return typer.confirm(f"delete {total} run{'s' if total != 1 else ''}?", default=False)


def prune_runs(
    database: str | None, seconds: float, label: str, agents: Sequence[str], yes: bool
) -> None:
    """Show what is in scope, ask, delete; one line per outcome."""
    try:
        store = open_store(database)
    except StoreError as exc:
        _echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    cutoff = time.time() - seconds
    try:
        counts = _counts(store, agents, cutoff)
        total = sum(counts.values())
        if not total:
            _echo(f"deleted 0 runs finished before {label} ago (none in scope)")
            return
        per_agent = ", ".join(f"{agent} {n}" for agent, n in counts.items())
        _echo(f"finished before {label} ago: {per_agent}", err=True)
        if not _confirmed(total, yes):
            _echo("nothing deleted", err=True)
            return
        deleted = 0
        while gone := _delete_batch(store, agents, cutoff):
            deleted += len(gone)
            try:
                asyncio.run(_forget_workflows(store.url, gone))
            except Exception:
                _echo("warning: the DBOS records of some pruned runs were not deleted", err=True)
        _echo(f"deleted {deleted} run{'s' if deleted != 1 else ''} finished before {label} ago")
    finally:
        store.dispose()
