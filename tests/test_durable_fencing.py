"""Lease fencing in one process: a run's workflow is re-dispatched (DBOS resume, as the
takeover supervisor does) while its first execution waits inside a step; the second
execution takes the lease, and the first, once it goes on, records nothing and starts no
step. Then the lease mechanics themselves: epochs, fenced writes, the take/check order."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from durable_support import assert_events_once, postgres_database, sqlite_url, wait_for, wait_until
from fencing_agents import agents, arm, lines, ready, release
from figures import figure
from loopwise.durable import DurableEngine, StoredEvent
from loopwise.durable import fencing as fencing_module
from loopwise.durable.children import ChildSteps
from loopwise.durable.fencing import (
    Lease,
    LeaseLost,
    create_tables,
    fenced_store,
    late_result,
    leases,
    record_late,
)
from loopwise.durable.store import Store
from loopwise.durable.workflow import QUEUE_NAME
from loopwise.messages import ToolResultPart

pytestmark = pytest.mark.anyio

TRIED: dict[str, list[bool]] = {}


@pytest.fixture
def counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    monkeypatch.setenv("LW_COUNT_DIR", str(path))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
async def engine(database: str, counts: Path) -> AsyncIterator[DurableEngine]:
    eng = DurableEngine(agents, database=database, executor_id="fence-1", poll_seconds=0.05)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


def kind(engine: DurableEngine) -> str:
    return "sqlite" if engine.store.is_sqlite else "postgresql"


async def take_over(engine: DurableEngine, run_id: str) -> None:
    """What the supervisor does for a dead executor: re-enqueue the run's workflow."""
    await engine._client.resume_workflows_async([run_id], queue_name=QUEUE_NAME)


async def fenced(caplog: pytest.LogCaptureFixture, run_id: str) -> None:
    """Wait until the first execution has found its lease lost."""

    def seen() -> bool:
        return any(
            "lost its lease" in r.getMessage() and run_id in r.getMessage() for r in caplog.records
        )

    await wait_until(seen, within=20, what=f"the stale execution of {run_id} to be fenced")


async def stored(engine: DurableEngine, run_id: str) -> list[StoredEvent]:
    return await engine.events(run_id, limit=5000)


def tool_output(messages: Sequence[object], call_id: str) -> str:
    for m in messages:
        for p in getattr(m, "parts", ()):
            if isinstance(p, ToolResultPart) and p.call_id == call_id:
                return str(p.content)
    raise AssertionError(f"no result for {call_id}")


def held(name: str, ok: bool) -> None:
    TRIED.setdefault(name, []).append(ok)


@pytest.fixture
def slow_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stale call finishes before the lease watcher looks (it looks once a minute)."""
    monkeypatch.setattr(fencing_module, "WATCH_SECONDS", 60.0)


async def paused_by_takeover(engine: DurableEngine, tag: str) -> str:
    """A run whose charge call waits in its first execution; after the takeover the
    second execution asks for approval (the call is interrupted)."""
    arm(f"tool-{tag}-0-0")
    run = await engine.submit("payer", f"{tag} charge note")
    await wait_until(lambda: ready(f"tool-{tag}-0-0") is not None, what="the charge to wait")
    await take_over(engine, run.id)
    paused = await wait_for(engine, run.id, {"input_required"})
    [pending] = paused.pending_approvals
    assert pending.reason == "interrupted"
    assert "may still be running" in (paused.detail or ""), paused.detail
    return run.id


async def test_a_late_charge_is_not_recorded_and_not_repeated(
    engine: DurableEngine, caplog: pytest.LogCaptureFixture, slow_watch: None
) -> None:
    caplog.set_level(logging.WARNING, "loopwise.durable")
    run_id = await paused_by_takeover(engine, "v1")
    before, row = await stored(engine, run_id), await engine.get(run_id)
    release("tool-v1-0-0")  # the stale execution's charge completes now
    await fenced(caplog, run_id)

    def late() -> dict[str, object] | None:
        return late_result(engine.store, run_id, "v1-0-0", {"amount": 5})

    await wait_until(lambda: late() is not None, what="the late result")  # written after
    assert late() == {"content": "charged 5", "is_error": False}
    after = await engine.get(run_id)
    assert await stored(engine, run_id) == before
    assert (after.status, after.updated_at) == (row.status, row.updated_at)
    await engine.decide(run_id, "v1-0-0", approve=True)
    done = await wait_for(engine, run_id)
    assert done.status == "completed", done
    # The approved call found the late result: the card was charged once, by the first try.
    assert len(lines("tool", "charge", "v1-0-0")) == 2  # one start, one effect
    assert tool_output(await engine.transcript(run_id), "v1-0-0") == "charged 5"
    await assert_events_once(engine, run_id)
    held(f"late charge ({kind(engine)})", True)


async def test_an_approved_rerun_keeps_its_own_record_when_the_stale_call_ends(
    engine: DurableEngine, caplog: pytest.LogCaptureFixture, slow_watch: None
) -> None:
    caplog.set_level(logging.WARNING, "loopwise.durable")
    run_id = await paused_by_takeover(engine, "v2")
    await engine.decide(run_id, "v2-0-0", approve=True)
    done = await wait_for(engine, run_id)
    assert done.status == "completed", done
    before = await stored(engine, run_id)
    release("tool-v2-0-0")  # the first attempt, still in flight, completes after the rerun
    await fenced(caplog, run_id)
    assert await stored(engine, run_id) == before
    assert (await engine.get(run_id)).status == "completed"
    # A call already running when the lease was lost cannot be un-run: at most 1 + approvals.
    assert len(lines("tool", "charge", "v2-0-0")) == 4  # two starts, two effects
    with engine.store.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT state FROM loopwise_tool_attempts WHERE run_id = :r"), {"r": run_id}
        ).one()
    assert row.state == "finished"
    await assert_events_once(engine, run_id)
    held(f"approved rerun, stale call ends after ({kind(engine)})", True)


async def test_the_watcher_stops_a_stale_call_still_waiting(
    engine: DurableEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fencing_module, "WATCH_SECONDS", 0.05)
    caplog.set_level(logging.WARNING, "loopwise.durable")
    run_id = await paused_by_takeover(engine, "v3")
    await fenced(caplog, run_id)  # the watcher found the newer epoch and cancelled the call
    release("tool-v3-0-0")
    await engine.decide(run_id, "v3-0-0", approve=True)
    done = await wait_for(engine, run_id)
    assert done.status == "completed", done
    effects = lines("tool", "charge", "v3-0-0")
    assert [line.split()[3] for line in effects] == ["start", "start", "effect"]
    await assert_events_once(engine, run_id)
    held(f"watcher cancels the stale call ({kind(engine)})", True)


@pytest.mark.parametrize("where", ["model", "note"])
async def test_a_stale_step_in_flight_is_not_recorded_and_starts_nothing(
    engine: DurableEngine, caplog: pytest.LogCaptureFixture, slow_watch: None, where: str
) -> None:
    caplog.set_level(logging.WARNING, "loopwise.durable")
    tag = f"v4{where[0]}"
    key = f"model-{tag}-1" if where == "model" else f"tool-{tag}-1-0"
    arm(key)
    run = await engine.submit("payer", f"{tag} note note")
    await wait_until(lambda: ready(key) is not None, what="the step to wait")
    await take_over(engine, run.id)
    done = await wait_for(engine, run.id)  # the second execution runs it to the end
    assert done.status == "completed", done
    before = await stored(engine, run.id)
    release(key)
    await fenced(caplog, run.id)
    assert await stored(engine, run.id) == before
    assert (await engine.get(run.id)).status == "completed"
    # Each later step started once (by the second execution); the stale one started none.
    assert len(lines("model", tag, "2", "start")) == 1
    if where == "model":
        assert len(lines("tool", "note", f"{tag}-1-0", "start")) == 1
    assert len(lines("model", tag, "1", "start")) == (2 if where == "model" else 1)
    await assert_events_once(engine, run.id)
    held(f"stale {where} step in flight ({kind(engine)})", True)


async def test_a_stale_execution_held_between_steps_writes_nothing_when_it_goes_on(
    engine: DurableEngine, caplog: pytest.LogCaptureFixture, slow_watch: None
) -> None:
    """Held after a step was recorded and before the next flush: the old code wrote the
    buffered events and the row (status back to in_progress) over the newer execution's."""
    caplog.set_level(logging.WARNING, "loopwise.durable")
    arm("after-v6-0-0")
    run = await engine.submit("payer", "v6 note refund")
    await wait_until(lambda: ready("after-v6-0-0") is not None, what="the loop to hold")
    await take_over(engine, run.id)
    paused = await wait_for(engine, run.id, {"input_required"})
    assert [p.reason for p in paused.pending_approvals] == ["requires_approval"]
    before = await stored(engine, run.id)
    release("after-v6-0-0")
    await fenced(caplog, run.id)
    after = await engine.get(run.id)
    assert await stored(engine, run.id) == before
    assert (after.status, after.updated_at, after.steps) == (
        paused.status,
        paused.updated_at,
        paused.steps,
    )
    await engine.decide(run.id, "v6-1-0", approve=True)
    done = await wait_for(engine, run.id)
    assert done.status == "completed", done
    assert len(lines("model", "v6", "1", "start")) == 1
    assert len(lines("tool", "refund", "v6-1-0", "effect")) == 1
    await assert_events_once(engine, run.id)
    held(f"stale execution held between steps ({kind(engine)})", True)


async def test_an_execution_dispatched_before_a_newer_one_cannot_take_the_lease(
    engine: DurableEngine,
) -> None:
    """Its take is rolled back: DBOS's ownership token of the workflow is no longer its."""
    run = await engine.submit("payer", "v7 note")
    assert (await wait_for(engine, run.id)).status == "completed"
    with engine.store.engine.connect() as conn:
        epoch = conn.execute(sa.select(leases.c.epoch).where(leases.c.run_id == run.id)).scalar()
    stale = Lease(engine.store, run.id, 0, "old", workflow_id=run.id, dbos_token="stale-token")
    assert not await stale.take()
    assert stale.lost is not None
    with engine.store.engine.connect() as conn:
        after = conn.execute(sa.select(leases.c.epoch).where(leases.c.run_id == run.id)).scalar()
    assert after == epoch == 1
    held(f"stale execution starting late ({kind(engine)})", True)


# -- the lease itself --------------------------------------------------------------------


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    from loopwise.durable.schema import resolve_database

    s = Store(resolve_database(database))
    s.migrate()
    create_tables(s)
    with s.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO loopwise_runs (id, agent, status, input, spec, cost, steps, "
                "tool_calls, segment, created_at, updated_at) VALUES ('r1', 'a', 'in_progress', "
                "'x', '{}', 0, 0, 0, 0, 0, 0)"
            )
        )
    try:
        yield s
    finally:
        s.dispose()


async def test_epochs_rise_and_every_fenced_write_of_a_superseded_lease_is_refused(
    store: Store,
) -> None:
    first = Lease(store, "r1", 0, "w1")
    assert await first.take() and first.epoch == 1
    view = fenced_store(store, first)
    children = ChildSteps(view, "r1", first)
    assert view.progress(
        "r1", 0, {"steps": 1}, [{"run_id": "r1", "seq": 1, "type": "t", "data": {}}]
    )
    await children.put("c:model:0", {"x": 1})
    second = Lease(store, "r1", 0, "w2")
    assert await second.take() and second.epoch == 2
    writes = {
        "progress": lambda: view.progress("r1", 0, {"steps": 2}, []),
        "events": lambda: view.progress(
            "r1", 0, {}, [{"run_id": "r1", "seq": 2, "type": "t", "data": {}}]
        ),
        "state": lambda: view.progress("r1", 0, {}, [], {"seq": 1, "state": {}}),
        "attempt_begin": lambda: view.attempt_begin("r1", "c1", 3, False),
        "attempt_finish": lambda: view.attempt_finish("r1", "c1", {"content": "x"}),
        "child put": lambda: asyncio.run(children.put("c:model:1", {"x": 2})),
        "child begin": lambda: asyncio.run(children.begin("c:tool:1")),
        "verify": first.verify,
    }
    refused = []
    for name, write in writes.items():
        try:
            await asyncio.to_thread(write)
        except LeaseLost:
            refused.append(name)
    assert refused == list(writes)
    assert first.lost is not None
    with pytest.raises(LeaseLost):
        await children.fence()
    row = store.row("r1")
    assert row is not None and row["steps"] == 1
    assert [e.seq for e in store.events("r1", after=0, limit=10)] == [1]
    # The newer lease writes freely.
    newer = fenced_store(store, second)
    assert await asyncio.to_thread(newer.progress, "r1", 0, {"steps": 5}, [])
    for name in writes:
        held(f"fenced write: {name} ({'sqlite' if store.is_sqlite else 'postgresql'})", True)


async def test_a_take_waits_for_a_check_in_flight_and_then_supersedes_it(store: Store) -> None:
    """The check and the take serialize on the lease row: a write that passed its check
    commits before the take, and nothing written after the take passes."""
    first = Lease(store, "r1", 0, "w1")
    await first.take()
    in_check = threading.Event()
    go_on = threading.Event()

    def slow_write() -> float:
        with fenced_store(store, first).engine.begin() as conn:
            in_check.set()
            go_on.wait(5)
            conn.execute(sa.text("UPDATE loopwise_runs SET steps = 7 WHERE id = 'r1'"))
        return time.monotonic()

    writer = asyncio.ensure_future(asyncio.to_thread(slow_write))
    await asyncio.to_thread(in_check.wait, 5)
    second = Lease(store, "r1", 0, "w2")
    taker = asyncio.ensure_future(second.take())
    await asyncio.sleep(0.3)
    assert not taker.done()  # the take waits for the write holding the check
    go_on.set()
    wrote_at = await writer
    assert await taker
    row = store.row("r1")
    assert row is not None and row["steps"] == 7 and wrote_at > 0
    with pytest.raises(LeaseLost):
        await asyncio.to_thread(first.verify)
    held(f"take waits for a check in flight ({'sqlite' if store.is_sqlite else 'pg'})", True)


async def test_a_late_result_is_kept_only_for_the_same_arguments(store: Store) -> None:
    lease = Lease(store, "r1", 0, "w1")
    await lease.take()
    await asyncio.to_thread(record_late, lease, "c1", {"amount": 5}, {"content": "ok"})
    assert late_result(store, "r1", "c1", {"amount": 5}) == {"content": "ok"}
    assert late_result(store, "r1", "c1", {"amount": 6}) is None  # an edited approval
    assert late_result(store, "r1", "c2", {"amount": 5}) is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(leases.c.epoch)).scalar() == 1


async def test_what_fencing_costs_per_write(store: Store) -> None:
    lease = Lease(store, "r1", 0, "w1")
    await lease.take()
    fenced = fenced_store(store, lease)
    n = 150

    def writes(target: Store) -> float:
        began = time.perf_counter()
        for i in range(n):
            target.progress("r1", 0, {"steps": i}, [])
        return (time.perf_counter() - began) / n

    def verifies() -> float:
        began = time.perf_counter()
        for _ in range(n):
            lease.verify()
        return (time.perf_counter() - began) / n

    plain = min([await asyncio.to_thread(writes, store) for _ in range(2)])
    checked = min([await asyncio.to_thread(writes, fenced) for _ in range(2)])
    alone = await asyncio.to_thread(verifies)
    kind = "sqlite" if store.is_sqlite else "postgresql"
    figure(
        f"fencing cost ({kind}): a run-row write {plain * 1000:.2f} ms plain, "
        f"{checked * 1000:.2f} ms with the lease check in its transaction; a check on its "
        f"own (before a step, unless one ran in the last 0.2 s) {alone * 1000:.2f} ms"
    )


def test_zz_figure() -> None:
    """Record what the tests above tried (they run first, in file order)."""
    if TRIED:
        total = sum(len(v) for v in TRIED.values())
        ok = sum(sum(v) for v in TRIED.values())
        figure(
            f"lease fencing (in-process takeover via DBOS resume; SQLite and PostgreSQL): "
            f"{total} attacks, {ok} held: {', '.join(sorted(TRIED))}"
        )
