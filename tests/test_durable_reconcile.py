"""The reconciler: a run whose workflow ended without recording how (an escaped exception, a
cancellation through DBOS itself, DBOS giving up) is ended; live, queued and waiting runs
are not touched, and a run that finishes while it looks is not overwritten."""

from __future__ import annotations

import asyncio
import base64
import pickle
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from durable_agents import agents
from durable_support import assert_events_once, sqlite_url, wait_for
from figures import figure
from loopwise.durable import TERMINAL, DurableEngine
from loopwise.durable.reconcile import Reconciler

pytestmark = pytest.mark.anyio

INTERVAL = 0.2
SLACK = 2.0
OVER = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


@pytest.fixture
def count_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    monkeypatch.setenv("LW_COUNT_DIR", str(path))
    return path


def worker(tmp_path: Path, *, concurrency: int, reconcile_seconds: float) -> DurableEngine:
    return DurableEngine(
        agents,
        database=sqlite_url(tmp_path),
        executor_id="reconcile-test",
        concurrency=concurrency,
        poll_seconds=0.05,
        heartbeat_seconds=0.5,
        dead_after_seconds=2,
        reconcile_seconds=reconcile_seconds,
    )


@pytest.fixture
async def api(tmp_path: Path, count_dir: Path) -> AsyncIterator[DurableEngine]:
    """An API-only engine: runs it submits stay queued until a worker starts."""
    eng = DurableEngine(agents, database=sqlite_url(tmp_path), workers=False)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


def set_workflow(engine: DurableEngine, table_name: str, wf_id: str, **values: Any) -> None:
    """Change one of DBOS's own rows of a workflow (as another client or DBOS could)."""
    table = sa.table(table_name, *(sa.column(c) for c in ["workflow_uuid", *values]))
    with engine.store.engine.begin() as conn:
        done = conn.execute(sa.update(table).where(table.c.workflow_uuid == wf_id).values(values))
        assert done.rowcount == 1


async def dbos_status(engine: DurableEngine, wf_id: str) -> str | None:
    found = await engine._client.list_workflows_async(
        workflow_ids=[wf_id], load_input=False, load_output=False
    )
    return str(found[0].status) if found else None


async def time_to_repair(engine: DurableEngine, run_ids: list[str], *, within: float) -> float:
    """Poll until every run is terminal; returns the longest time from its workflow being over
    in DBOS to its row being terminal."""
    over_at: dict[str, float] = {}
    lag: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(lag) < len(run_ids):
        assert time.monotonic() < deadline, f"not repaired: {set(run_ids) - set(lag)}"
        for run_id in set(run_ids) - set(lag):
            now = time.monotonic()
            if run_id not in over_at and await dbos_status(engine, run_id) in OVER:
                over_at[run_id] = now
            if (await engine.get(run_id)).status in TERMINAL:
                lag[run_id] = now - over_at.get(run_id, now)
        await asyncio.sleep(0.02)
    return max(lag.values())


def failing_final_write(engine: DurableEngine, tag: str) -> Callable[..., bool]:
    """The store's progress write, failing for the run whose task starts with ``tag`` at its
    last write (the one that records how the run ended), as a lost connection would."""
    store = engine.store
    real = store.progress

    def progress(run_id: str, segment: int, changes: Any, *args: Any) -> bool:
        row = store.row(run_id) if "finished_at" in changes else None
        if row is not None and row["input"].startswith(tag + " "):
            raise sa.exc.OperationalError("UPDATE loopwise_runs", {}, Exception("disk I/O error"))
        return real(run_id, segment, changes, *args)

    return progress


async def test_runs_whose_workflow_ended_unrecorded_are_ended(
    api: DurableEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Queued while no worker runs: one whose input was rewritten as a pickle (DBOS refuses
    # to read it: ERROR), one cancelled through DBOS directly (CANCELLED), one DBOS gave up
    # on (MAX_RECOVERY_ATTEMPTS_EXCEEDED, as DBOS's dead-lettering writes it), one healthy.
    pickled = await api.submit("worker", "s1 note")
    payload = base64.b64encode(pickle.dumps({"args": [], "kwargs": {}})).decode()
    set_workflow(api, "workflow_input", pickled.id, inputs=payload)
    set_workflow(api, "workflow_status", pickled.id, serialization="py_pickle")
    cancelled = await api.submit("worker", "s2 note")
    await api._client.cancel_workflow_async(cancelled.id)
    gave_up = await api.submit("worker", "s3 note")
    set_workflow(api, "workflow_status", gave_up.id, status="MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    healthy = await api.submit("worker", "s4 note note")
    for run in (pickled, cancelled, gave_up):
        assert (await api.get(run.id)).status == "queued"

    engine = worker(tmp_path, concurrency=4, reconcile_seconds=INTERVAL)
    await engine.start()
    try:
        # Running, then its last write fails: the exception escapes the workflow (ERROR).
        monkeypatch.setattr(engine.store, "progress", failing_final_write(engine, "s5"))
        lost = await engine.submit("worker", "s5 note")
        stuck = [pickled.id, cancelled.id, gave_up.id, lost.id]
        lag = await time_to_repair(engine, stuck, within=20)
        assert lag < INTERVAL + SLACK

        for run_id in (pickled.id, gave_up.id, lost.id):
            record = await engine.get(run_id)
            assert (record.status, record.stop_reason) == ("failed", "error"), record
            assert record.finished_at is not None and record.pending_approvals == []
        errors = {r: (await engine.get(r)).error or "" for r in (pickled.id, gave_up.id, lost.id)}
        assert errors[pickled.id] == (
            "the run's workflow ended with DBOS status ERROR: DBOS stored its error in a form "
            "loopwise does not read (not JSON)"
        )
        assert errors[gave_up.id] == (
            "the run's workflow ended with DBOS status MAX_RECOVERY_ATTEMPTS_EXCEEDED: DBOS "
            "stopped recovering it after too many attempts (its worker died each time)"
        )
        assert errors[lost.id] == (
            "the run's workflow ended with DBOS status ERROR: "
            "OperationalError: (builtins.Exception) disk I/O error"
        )
        gone = await engine.get(cancelled.id)
        assert (gone.status, gone.stop_reason, gone.error) == ("cancelled", "cancelled", None)
        assert gone.detail == f"the run's workflow {cancelled.id} was cancelled in DBOS."

        for run_id in stuck:
            await assert_events_once(engine, run_id)
            last = (await engine.events(run_id))[-1].data
            record = await engine.get(run_id)
            assert (last["status"], last["error"]) == (record.status, record.error)
            assert last["stop_reason"] == record.stop_reason
        # The running one keeps the events it wrote; its end follows them.
        assert f"run {lost.id} was in_progress but its workflow is over" in caplog.text
        types = [e.type for e in await engine.events(lost.id)]
        assert types[0] == "run_started" and "tool_call" in types, types

        done = await wait_for(engine, healthy.id, within=20)
        assert done.status == "completed" and done.error is None
        reconciler = engine._reconciler
        assert reconciler is not None and reconciler.repaired == len(stuck)
    finally:
        await engine.stop()
    figure(
        f"reconciler: stuck runs (DBOS ERROR x2, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED) "
        f"ended {len(stuck)}/{len(stuck)}, at most {lag:.2f} s after their workflow ended "
        f"(interval {INTERVAL} s); healthy run touched 0"
    )


async def test_live_queued_and_waiting_runs_are_left_alone(
    tmp_path: Path, count_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LW_NOTE_DELAY", "0.4")
    engine = worker(tmp_path, concurrency=1, reconcile_seconds=0.05)
    await engine.start()
    try:
        reconciler = engine._reconciler
        assert reconciler is not None
        reconciler.batch = 2  # several passes to cover the runs: the cursor moves on and wraps
        parked = await engine.submit("worker", "h0 delete")
        await wait_for(engine, parked.id, {"input_required"})
        parked_events = len(await engine.events(parked.id))
        slow = await engine.submit("worker", "h1 note note note")
        await wait_for(engine, slow.id, {"in_progress"})
        queued = [(await engine.submit("worker", f"h{i} note")).id for i in range(2, 6)]
        passes = reconciler.passes
        seen: set[str] = set()
        runs = [slow.id, *queued]
        while (await engine.get(slow.id)).status == "in_progress":
            seen |= {(await engine.get(r)).status for r in runs}
            await asyncio.sleep(0.05)
        assert {"queued", "in_progress"} <= seen
        assert reconciler.passes - passes >= 10
        for run_id in runs:
            assert (await wait_for(engine, run_id, within=20)).status == "completed"
            await assert_events_once(engine, run_id)
        still = await engine.get(parked.id)
        assert still.status == "input_required" and len(still.pending_approvals) == 1
        assert len(await engine.events(parked.id)) == parked_events
        assert reconciler.repaired == 0
        await engine.decide(parked.id, "h0-0-0", approve=True)
        assert (await wait_for(engine, parked.id)).status == "completed"
        assert reconciler.repaired == 0
        figure(
            f"reconciler: {reconciler.passes} passes over 1 running, 4 queued and 1 waiting "
            f"run (batch 2) -> runs touched 0"
        )
    finally:
        await engine.stop()


async def test_a_run_that_ends_meanwhile_is_not_overwritten(
    tmp_path: Path, count_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LW_NOTE_DELAY", "0.3")
    engine = worker(tmp_path, concurrency=1, reconcile_seconds=3600)
    await engine.start()
    try:
        first, second = (
            Reconciler(engine.store, engine._client),
            Reconciler(engine.store, engine._client),
        )
        done = await wait_for(engine, (await engine.submit("worker", "x1 note")).id)
        paused = await engine.submit("worker", "x2 delete")
        await wait_for(engine, paused.id, {"input_required"})
        before = {r: await engine.events(r) for r in (done.id, paused.id)}
        # The worst interleaving: the reconciler saw both running and their workflows over.
        errored = SimpleNamespace(status="ERROR", error=RuntimeError("boom"))
        for run_id in (done.id, paused.id):
            stale = {"id": run_id, "status": "in_progress", "segment": 0, "updated_at": 0.0}
            assert not await first._repair(stale, run_id, errored)
        assert (await engine.get(done.id)).status == "completed"
        assert (await engine.get(done.id)).output == done.output
        assert (await engine.get(paused.id)).status == "input_required"
        assert {r: await engine.events(r) for r in before} == before

        # While one slow run holds the only slot, others stay queued behind it.
        busy = await engine.submit("worker", "x0 " + "note " * 8)
        await wait_for(engine, busy.id, {"in_progress"})
        # A run seen queued at segment 0 is queued again at segment 1 (paused, decided)
        # when the reconciler writes: the segment no longer matches.
        await engine.decide(paused.id, "x2-0-0", approve=True)
        moved = {"id": paused.id, "status": "queued", "segment": 0, "updated_at": 0.0}
        assert not await first._repair(moved, paused.id, errored)
        assert (await engine.get(paused.id)).status == "queued"

        # Two workers find the same stuck run at once: it is ended once, with one event.
        stuck = await engine.submit("worker", "x3 note")
        await engine._client.cancel_workflow_async(stuck.id)
        ended = await asyncio.gather(first.run_once(), second.run_once())
        assert sorted(ended) == [0, 1]
        assert [e.data["status"] for e in await engine.events(stuck.id)] == ["cancelled"]

        # A workflow DBOS no longer has counts as lost only once the run has been still
        # for ``missing_after`` seconds.
        lost = await engine.submit("worker", "x4 note")
        await engine._client.delete_workflows_async([lost.id])
        assert await Reconciler(engine.store, engine._client).run_once() == 0
        assert (await engine.get(lost.id)).status == "queued"
        hasty = Reconciler(engine.store, engine._client, missing_after=0)
        assert await hasty.run_once() == 1
        record = await engine.get(lost.id)
        assert record.status == "failed"
        assert record.error == f"the run's workflow {lost.id} does not exist in DBOS; " + (
            "it can never finish."
        )
        assert (await engine.get(busy.id)).status == "in_progress"
        for run_id in (busy.id, paused.id):
            assert (await wait_for(engine, run_id, within=20)).status == "completed"
    finally:
        await engine.stop()
