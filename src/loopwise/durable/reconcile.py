"""Ending runs whose workflow ended without saying so: nothing stays in progress forever.

A run's row says ``queued`` or ``in_progress`` until its segment's workflow writes how it
ended. A workflow can end without writing: an exception escaped it (a bug, a refused
pickled input, a database error at its last write: DBOS status ``ERROR``), someone
cancelled it through DBOS directly (``CANCELLED``), or DBOS gave up recovering it
(``MAX_RECOVERY_ATTEMPTS_EXCEEDED``). Every worker checks, every few seconds, a bounded
batch of queued and running runs against their current segment's DBOS status and ends
those whose workflow is over: ``cancelled`` for a DBOS cancellation (what the person who
cancelled it meant), ``failed`` with stop reason ``error`` otherwise.

The write is conditional on the status and segment the reconciler saw, so a run that
finished or paused meanwhile is left as it is, and workers repairing the same run write it
once. Runs waiting for a decision hold no workflow and are never looked at; a workflow
that DBOS reports as enqueued, delayed or pending is still live and is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..events import RunFinished
from ..messages import Usage
from .records import RunRecord
from .store import Store
from .workflow import workflow_id

__all__ = ["Ending", "Reconciler", "ending_for", "final_event"]

logger = logging.getLogger("loopwise.durable")

# DBOS statuses after which a workflow never runs again (unless resumed through DBOS).
OVER = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
MAX_ERROR_CHARS = 2000


def final_event(
    record: RunRecord, *, status: str, stop_reason: str, error: str | None
) -> dict[str, Any]:
    """The ``run_finished`` event of a run ended from outside its workflow (cancel, repair)."""
    duration = time.time() - record.started_at if record.started_at else 0.0
    return RunFinished(
        run_id=record.id,
        step=record.steps,
        status=status,
        stop_reason=stop_reason,
        output=None,
        error=error,
        usage=Usage(**record.usage),
        cost_usd=record.cost_usd,
        steps=record.steps,
        duration=duration,
    ).to_dict()


@dataclass(frozen=True, slots=True)
class Ending:
    """How the reconciler ends a run whose workflow is over."""

    status: str
    stop_reason: str
    error: str | None = None
    detail: str | None = None


def ending_for(wf_id: str, found: Any, *, missing: bool) -> Ending | None:
    """The ending for a run whose segment workflow ``wf_id`` has DBOS status ``found`` (a
    ``WorkflowStatus``; None when DBOS has no such workflow), or None if it is still live.
    ``missing`` says whether an absent workflow has been absent long enough to count."""
    if found is None:
        if not missing:
            return None
        text = f"the run's workflow {wf_id} does not exist in DBOS; it can never finish."
        return Ending("failed", "error", error=text)
    status = str(found.status)
    if status not in OVER:
        return None
    if status == "CANCELLED":
        return Ending(
            "cancelled", "cancelled", detail=f"the run's workflow {wf_id} was cancelled in DBOS."
        )
    if status == "SUCCESS":
        summary = "it returned without recording how the run ended"
    elif status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED" and found.error is None:
        summary = "DBOS stopped recovering it after too many attempts (its worker died each time)"
    else:
        summary = _error_summary(found.error)
    text = f"the run's workflow ended with DBOS status {status}: {summary}"
    return Ending("failed", "error", error=text[:MAX_ERROR_CHARS])


def _error_summary(error: Any) -> str:
    """The error's type and the first line of its message."""
    if error is None:
        return "DBOS recorded no error"
    if not isinstance(error, BaseException):  # DBOS hands back what it could not read as text
        return "DBOS stored its error in a form loopwise does not read (not JSON)"
    name = getattr(error, "name", None)  # a portable JSON error keeps the original type's name
    kind = name if isinstance(name, str) and name else type(error).__name__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{kind}: {lines[0]}" if lines else kind


class Reconciler:
    """Ends runs whose workflow is over (see the module docstring); one per worker.

    Each pass reads up to ``batch`` queued or running runs (in id order, continuing where
    the last pass stopped) and asks DBOS for their segments' statuses in one call. A
    workflow DBOS does not know is only taken as lost once the run has not changed for
    ``missing_after`` seconds.
    """

    def __init__(
        self, store: Store, client: Any, *, batch: int = 100, missing_after: float = 60.0
    ) -> None:
        self.store = store
        self.client = client
        self.batch = batch
        self.missing_after = missing_after
        self.passes = 0
        self.repaired = 0
        self._after = ""

    async def run(self, interval: float) -> None:
        """A pass every ``interval`` seconds until cancelled; a failed pass is retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception:
                logger.warning("the run reconciler failed; it will try again", exc_info=True)

    async def run_once(self) -> int:
        """One pass; returns how many runs it ended."""
        rows = await asyncio.to_thread(self.store.unfinished, after=self._after, limit=self.batch)
        self._after = rows[-1]["id"] if len(rows) == self.batch else ""
        ended = 0
        if rows:
            ids = [workflow_id(r["id"], int(r["segment"])) for r in rows]
            found = await self.client.list_workflows_async(
                workflow_ids=ids, load_input=False, load_output=True
            )
            by_id = {w.workflow_id: w for w in found}
            for row, wf_id in zip(rows, ids, strict=True):
                if await self._repair(row, wf_id, by_id.get(wf_id)):
                    ended += 1
        self.passes += 1
        self.repaired += ended
        return ended

    async def _repair(self, row: dict[str, Any], wf_id: str, found: Any) -> bool:
        missing = time.time() - float(row["updated_at"]) > self.missing_after
        ending = ending_for(wf_id, found, missing=missing)
        if ending is None:
            return False
        values = {
            "status": ending.status,
            "stop_reason": ending.stop_reason,
            "error": ending.error,
            "detail": ending.detail,
        }

        def finished(record: RunRecord) -> dict[str, Any]:
            return final_event(
                record, status=ending.status, stop_reason=ending.stop_reason, error=ending.error
            )

        _, done = await asyncio.to_thread(
            self.store.end,
            row["id"],
            values,
            finished,
            segment=int(row["segment"]),
            statuses=[row["status"]],
        )
        if done:
            logger.warning(
                "run %s was %s but its workflow is over; it is now %s (%s)",
                row["id"],
                row["status"],
                ending.status,
                ending.error or ending.detail,
            )
        return done
