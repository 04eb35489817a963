"""The ``runs`` and ``approve`` commands without a server: straight from the local store.

Used when neither ``--url`` nor ``LOOPWISE_URL`` is given. It reads the same database the
service uses (``--database``, default ``<data dir>/loopwise.sqlite``), so it shows CLI runs
and service runs alike. Decisions on a CLI run are recorded for ``loopwise resume``;
decisions on a service run are handed to its workers as the HTTP API does. Failures
raise :class:`~loopwise.cli.client.ApiError`, as the HTTP client does, so the commands
report them the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import LoopwiseError, UsageError
from .client import ApiError, SseEvent
from .store import StoreError, is_cli_run, open_store

__all__ = ["cancel_run", "decide", "get_run", "list_page", "record_cli_decision", "run_events"]

T = TypeVar("T")
FOLLOW_POLL_SECONDS = 0.3
_SETTLED = frozenset({"completed", "incomplete", "failed", "cancelled", "input_required"})


def _with_store(database: str | None, action: Callable[[Any], T]) -> T:
    """Run ``action(store)``; store and engine errors become :class:`ApiError`."""
    from ..durable.records import Conflict, InvalidArguments, NotFound

    try:
        store = open_store(database)
    except StoreError as exc:
        raise ApiError(0, "store", str(exc)) from None
    try:
        return action(store)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except (InvalidArguments, UsageError) as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    except LoopwiseError as exc:
        raise ApiError(500, "error", str(exc)) from None
    finally:
        store.dispose()


def list_page(
    database: str | None, *, status: str | None, agent: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of runs, newest first, in the API's shape."""

    def read(store: Any) -> dict[str, Any]:
        found, after = store.list_runs(status=status, agent=agent, limit=limit, cursor=cursor)
        return {"data": [r.to_dict() for r in found], "next_cursor": after}

    return _with_store(database, read)


def get_run(database: str | None, run_id: str) -> dict[str, Any]:
    return _with_store(database, lambda store: store.get(run_id).to_dict())


def run_events(
    database: str | None, run_id: str, *, after: int, follow: bool
) -> Iterator[SseEvent]:
    """The run's stored events after ``after``; with ``follow``, until the run settles."""
    try:
        store = open_store(database)
    except StoreError as exc:
        raise ApiError(0, "store", str(exc)) from None
    try:
        yield from _events(store, run_id, after, follow)
    finally:
        store.dispose()


def _events(store: Any, run_id: str, after: int, follow: bool) -> Iterator[SseEvent]:
    from ..durable.records import NotFound

    while True:
        try:
            page = store.events(run_id, after=after, limit=500)
        except NotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        for event in page:
            after = event.seq
            yield SseEvent(event.seq, event.type, dict(event.data))
        if len(page) == 500:
            continue
        if not follow:
            return
        row = store.row(run_id)
        if row is None or (row["status"] in _SETTLED and store.last_seq(run_id) <= after):
            return
        time.sleep(FOLLOW_POLL_SECONDS)


def cancel_run(database: str | None, run_id: str) -> dict[str, Any]:
    """Cancel a run: a CLI run in its row (its process notices and stops), a service run
    through the engine (its workflow is cancelled too)."""
    from functools import partial

    from ..durable.reconcile import final_event

    def cancel(store: Any) -> dict[str, Any]:
        row = store.row(run_id)
        if row is not None and not is_cli_run(row):
            return asyncio.run(_engine_call(database, lambda e: e.cancel(run_id)))
        finished = partial(final_event, status="cancelled", stop_reason="cancelled", error=None)
        return dict(store.cancel(run_id, finished).to_dict())

    return _with_store(database, cancel)


def decide(
    database: str | None,
    run_id: str,
    call_id: str,
    *,
    approve: bool,
    arguments: dict[str, Any] | None,
    reason: str | None,
) -> dict[str, Any]:
    """Record a decision on a pending call (bound to the run, pause, call, tool and
    arguments); a service run's workers continue it once every call is decided."""

    def act(store: Any) -> dict[str, Any]:
        row = store.row(run_id)
        if row is None:
            raise ApiError(404, "not_found", f"No run has the id {run_id!r}.")
        if not is_cli_run(row):
            if arguments is not None:
                raise ApiError(
                    400,
                    "invalid",
                    "Edited arguments for a service run are checked by its server: pass "
                    "--url (or LOOPWISE_URL).",
                )
            return asyncio.run(
                _engine_call(
                    database,
                    lambda e: e.decide(run_id, call_id, approve=approve, reason=reason),
                )
            )
        record_cli_decision(store, row, call_id, approve, arguments, reason)
        return dict(store.get(run_id).to_dict())

    return _with_store(database, act)


def record_cli_decision(
    store: Any,
    row: dict[str, Any],
    call_id: str,
    approve: bool,
    arguments: dict[str, Any] | None,
    reason: str | None,
) -> None:
    from ..durable.records import Conflict
    from ..durable.workflow import approval_digest

    run_id = row["id"]
    pending = {p["call_id"]: p for p in row["pending"] or []}
    if row["status"] != "input_required" or call_id not in pending:
        waiting = ", ".join(sorted(pending)) or "none"
        raise Conflict(
            f"Call {call_id!r} of run {run_id!r} is not waiting for a decision "
            f"(run status {row['status']}; pending calls: {waiting})."
        )
    call = pending[call_id]
    segment = int(row["segment"])
    decision = {
        "approve": approve,
        "arguments": arguments,
        "reason": (reason or "")[:2000] or None,
        "digest": approval_digest(run_id, segment, call_id, call["tool"], call["arguments"]),
        "principal": None,
    }
    store.decide(run_id, segment, call_id, decision, lambda *_: None)


async def _engine_call(database: str | None, action: Callable[[Any], Any]) -> dict[str, Any]:
    """``action(engine)`` on an API-only engine over ``database`` (no workers here)."""
    from ..durable import DurableEngine

    engine = DurableEngine({}, database=database, workers=False)
    await engine.start()
    try:
        record = await action(engine)
    finally:
        await engine.stop()
    return dict(record.to_dict())
