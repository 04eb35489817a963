"""The durable engine in one process on SQLite: runs, events, listing, idempotency,
approvals and their binding, cancel, prune, and what 200 parked runs cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from durable_agents import agents, arm, calls, is_ready
from durable_support import (
    assert_events_once,
    baseline,
    sqlite_url,
    wait_for,
    wait_until,
    worker_caught_up,
    workflows_of,
)
from figures import figure
from loopwise.durable import Conflict, DurableEngine, InvalidArguments, NotFound
from loopwise.durable.heartbeat import ExecutorSlot
from loopwise.events import parse_event
from loopwise.messages import ToolResultPart, UserMessage, dump_messages

pytestmark = pytest.mark.anyio


@pytest.fixture
def count_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    monkeypatch.setenv("LW_COUNT_DIR", str(path))
    return path


@asynccontextmanager
async def started(tmp_path: Path, concurrency: int) -> AsyncIterator[DurableEngine]:
    eng = DurableEngine(
        agents,
        database=sqlite_url(tmp_path),
        executor_id="in-process",
        concurrency=concurrency,
        poll_seconds=0.05,
        heartbeat_seconds=0.5,
        dead_after_seconds=2,
    )
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


@pytest.fixture
async def engine(tmp_path: Path, count_dir: Path) -> AsyncIterator[DurableEngine]:
    async with started(tmp_path, concurrency=8) as eng:
        yield eng


@pytest.fixture
async def serial(tmp_path: Path, count_dir: Path) -> AsyncIterator[DurableEngine]:
    """One workflow at a time, so a test can wait for the worker to catch up
    (:func:`durable_support.worker_caught_up`) before asserting that nothing happened."""
    async with started(tmp_path, concurrency=1) as eng:
        yield eng


async def test_a_run_completes_with_each_event_stored_once(
    engine: DurableEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "r1 note note*2 note"
    submitted = await engine.submit("worker", task, metadata={"user": "ada"})
    assert submitted.status == "queued"
    assert submitted.metadata == {"user": "ada"}
    done = await wait_for(engine, submitted.id)
    assert done.status == "completed", done
    assert done.output == "r1 done: noted r1.0.0 | noted r1.1.0 | noted r1.1.1 | noted r1.2.0"
    assert (done.steps, done.tool_calls) == (4, 4)
    assert done.usage["requests"] == 4
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    n = await assert_events_once(engine, done.id)
    stored = await engine.events(done.id)
    assert [parse_event(e.data).type for e in stored] == [e.type for e in stored]
    assert [e.seq for e in await engine.events(done.id, after=n - 2)] == [n - 1, n]
    # Each tool saw its idempotency key run_id:call_id.
    assert f"{done.id}:r1-1-1" in " ".join(calls("tool note r1-1-1"))
    expected, events = await baseline(task, tmp_path / "baseline", monkeypatch)
    assert dump_messages(await engine.transcript(done.id)) == expected
    assert n == events


async def test_reading_and_validation_errors(engine: DurableEngine) -> None:
    with pytest.raises(NotFound):
        await engine.get("run_nope")
    with pytest.raises(NotFound):
        await engine.events("run_nope")
    with pytest.raises(NotFound):
        await engine.submit("nobody", "x")
    with pytest.raises(InvalidArguments):
        await engine.submit("worker", "x" * 100_001)
    with pytest.raises(InvalidArguments):
        await engine.submit("worker", "   ")
    with pytest.raises(InvalidArguments):
        await engine.submit("worker", "x", budget={"max_dollars": 1})
    with pytest.raises(InvalidArguments):
        await engine.submit("worker", "x", budget={"max_usd": -1})
    with pytest.raises(InvalidArguments):
        await engine.submit("worker", "x", model="nonsense")
    with pytest.raises(InvalidArguments):
        await engine.list(cursor="!!not-a-cursor")
    # Input that looks like a serialized object is kept as plain text (security test 13).
    payload = 'cos\nsystem\n(S\'touch /tmp/pwned\'\ntR. {"__class__": "os.system"}'
    run = await engine.submit("worker", "t13 " + payload)
    assert (await engine.get(run.id)).input == "t13 " + payload


async def test_list_is_newest_first_with_a_cursor(engine: DurableEngine) -> None:
    ids = [(await engine.submit("worker", f"l{i}")).id for i in range(5)]
    for run_id in ids:
        await wait_for(engine, run_id)
    page, cursor = await engine.list(limit=2)
    seen = [r.id for r in page]
    while cursor:
        page, cursor = await engine.list(limit=2, cursor=cursor)
        seen += [r.id for r in page]
    assert seen == ids[::-1]
    assert [r.id for r in (await engine.list(status="completed", agent="worker"))[0]] == ids[::-1]
    assert (await engine.list(status="failed"))[0] == []


async def test_the_same_idempotency_key_twenty_times_makes_one_run(engine: DurableEngine) -> None:
    made = await asyncio.gather(
        *[engine.submit("worker", "k1 note", idempotency_key="key-1") for _ in range(20)]
    )
    assert len({r.id for r in made}) == 1
    await wait_for(engine, made[0].id)
    assert len((await engine.list())[0]) == 1
    assert len(calls("tool note k1-0-0")) == 1
    figure("idempotency: 20 concurrent submits with one key (one process) -> runs created = 1")


async def test_no_decision_means_the_gated_call_never_runs(serial: DurableEngine) -> None:
    engine = serial
    run = await engine.submit("worker", "a1 note delete note")
    paused = await wait_for(engine, run.id, {"input_required"})
    [pending] = paused.pending_approvals
    assert (pending.call_id, pending.tool, pending.reason) == (
        "a1-1-0",
        "delete",
        "requires_approval",
    )
    assert pending.arguments == {"path": "a1.1.0"}
    # The paused segment's workflow has returned and all that was queued before the marker
    # has run: the gated call had every chance to run, and did not; no segment followed.
    await worker_caught_up(engine)
    assert calls("tool delete") == []
    assert (await engine.get(run.id)).status == "input_required"
    assert await workflows_of(engine, run.id) == {run.id: ("SUCCESS", "in-process")}
    types = [e.type for e in await engine.events(run.id)]
    assert types[-2:] == ["approval_requested", "run_finished"]

    with pytest.raises(Conflict):  # another call's id
        await engine.decide(run.id, "a1-0-0", approve=True)
    with pytest.raises(Conflict):  # a call id no run has
        await engine.decide(run.id, "forged", approve=True)
    with pytest.raises(InvalidArguments):  # edited arguments must validate
        await engine.decide(run.id, "a1-1-0", approve=True, arguments={"path": 5})
    with pytest.raises(InvalidArguments):
        await engine.decide(run.id, "a1-1-0", approve=True, arguments={"path": "x", "extra": 1})
    with pytest.raises(InvalidArguments):
        await engine.decide(run.id, "a1-1-0", approve=False, arguments={"path": "x"})
    assert calls("tool delete") == []

    await engine.decide(run.id, "a1-1-0", approve=True, arguments={"path": "safe.txt"})
    with pytest.raises(Conflict):  # a decision sent twice
        await engine.decide(run.id, "a1-1-0", approve=True)
    done = await wait_for(engine, run.id)
    assert done.status == "completed"
    assert calls("tool delete") == ["tool delete a1-1-0 safe.txt approved=True"]
    assert len(calls("tool note a1-0-0")) == 1  # nothing before the pause ran again
    assert len(calls("model a1 0")) == len(calls("model a1 1")) == 1
    await assert_events_once(engine, run.id)


async def test_reject_tells_the_model_and_the_tool_never_runs(engine: DurableEngine) -> None:
    run = await engine.submit("worker", "a2 delete")
    await wait_for(engine, run.id, {"input_required"})
    await engine.decide(run.id, "a2-0-0", approve=False, reason="keep it")
    done = await wait_for(engine, run.id)
    assert done.status == "completed"
    assert calls("tool delete") == []
    results = [
        p
        for m in await engine.transcript(run.id)
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    assert results[0].is_error and "rejected by the user: keep it" in results[0].content


async def test_two_pending_calls_each_need_their_own_decision(serial: DurableEngine) -> None:
    engine = serial
    run = await engine.submit("worker", "a3 delete*2")
    paused = await wait_for(engine, run.id, {"input_required"})
    assert [p.call_id for p in paused.pending_approvals] == ["a3-0-0", "a3-0-1"]
    after_one = await engine.decide(run.id, "a3-0-1", approve=True)
    assert after_one.status == "input_required"
    # The worker has run all that was queued by the first decision: the approved call had
    # its chance to run before the other decision, and did not; no segment followed.
    await worker_caught_up(engine)
    assert calls("tool delete") == []
    assert (await engine.get(run.id)).status == "input_required"
    assert await workflows_of(engine, run.id) == {run.id: ("SUCCESS", "in-process")}
    await engine.decide(run.id, "a3-0-0", approve=False)
    done = await wait_for(engine, run.id)
    assert done.status == "completed"
    assert calls("tool delete") == ["tool delete a3-0-1 a3.0.1 approved=True"]


async def test_approval_smuggled_in_the_arguments_is_refused(engine: DurableEngine) -> None:
    done = await wait_for(engine, (await engine.submit("worker", "a4 smuggle")).id)
    assert done.status == "completed"
    assert calls("tool delete") == []
    figure("approval binding (in-process): 6 variants, gated executions without a decision = 0")


async def test_cancel_a_parked_run_and_a_running_one(serial: DurableEngine) -> None:
    engine = serial
    parked = await engine.submit("worker", "c1 delete")
    await wait_for(engine, parked.id, {"input_required"})
    cancelled = await engine.cancel(parked.id)
    assert cancelled.status == "cancelled" and cancelled.pending_approvals == []
    with pytest.raises(Conflict):
        await engine.cancel(parked.id)
    with pytest.raises(Conflict):
        await engine.decide(parked.id, "c1-0-0", approve=True)
    with pytest.raises(NotFound):
        await engine.cancel("run_nope")

    arm("tool-c2-1-0")
    running = await engine.submit("worker", "c2 note note note")
    await wait_until(lambda: is_ready("tool-c2-1-0"), what="the tool to block")
    await engine.cancel(running.id)
    # DBOS preempts the blocked step at its next cancellation poll (within 1 s); the marker
    # starts only once the cancelled workflow has returned, so the run had its chance to go
    # on to turn 2, and did not.
    await worker_caught_up(engine, within=15)
    assert len(calls("tool note c2-1-0")) == 1
    assert calls("model c2 2") == []
    assert (await engine.get(running.id)).status == "cancelled"
    assert (await workflows_of(engine, running.id))[running.id][0] == "CANCELLED"
    stored = await engine.events(running.id)
    assert stored[-1].type == "run_finished" and stored[-1].data["status"] == "cancelled"
    await assert_events_once(engine, running.id)
    for run_id in (parked.id, running.id):
        assert (await engine.events(run_id))[-1].data["status"] == "cancelled"
    assert calls("tool note c2-2-0") == []


async def test_prune_deletes_finished_runs(engine: DurableEngine) -> None:
    done = await wait_for(engine, (await engine.submit("worker", "p1 note")).id)
    parked = await engine.submit("worker", "p2 delete")
    await wait_for(engine, parked.id, {"input_required"})
    assert await engine.prune(older_than_seconds=3600) == 0
    assert await engine.prune(older_than_seconds=0) == 1
    with pytest.raises(NotFound):
        await engine.get(done.id)
    with pytest.raises(NotFound):
        await engine.events(done.id)
    dbos_client = engine._client
    assert await dbos_client.list_workflows_async(workflow_ids=[done.id]) == []
    assert (await engine.get(parked.id)).status == "input_required"


async def idle_cpu(seconds: float) -> float:
    """This process's CPU use over ``seconds`` of waiting, as a fraction of one core."""
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def test_two_hundred_parked_runs_do_not_stop_new_ones(engine: DurableEngine) -> None:
    baseline_idle = await idle_cpu(1.5)
    started = time.perf_counter()
    parked = [(await engine.submit("worker", f"pk{i} delete")).id for i in range(200)]
    for run_id in parked:
        await wait_for(engine, run_id, {"input_required"}, within=60)
    park_time = time.perf_counter() - started

    idle = await idle_cpu(2.0)

    started = time.perf_counter()
    fresh = [(await engine.submit("worker", f"nw{i} note")).id for i in range(10)]
    for run_id in fresh:
        assert (await wait_for(engine, run_id, within=20)).status == "completed"
    ten = time.perf_counter() - started

    run_id = parked[0]
    started = time.perf_counter()
    await engine.decide(run_id, "pk0-0-0", approve=True)
    await wait_until(lambda: calls("tool delete pk0-0-0"), what="the approved call")
    latency = time.perf_counter() - started
    figure(
        f"200 parked runs (SQLite WAL, in-process worker, concurrency 8): parked in "
        f"{park_time:.1f} s; idle CPU {idle * 100:.1f} % of one core (no runs parked: "
        f"{baseline_idle * 100:.1f} %); 10 new runs finished "
        f"in {ten:.2f} s; approval -> next step {latency * 1000:.0f} ms (poll 0.05 s)"
    )
    assert ten < 10


def test_default_executor_ids_are_distinct_and_stable(tmp_path: Path) -> None:
    first = ExecutorSlot.claim(tmp_path)
    second = ExecutorSlot.claim(tmp_path)
    assert first.executor_id != second.executor_id
    name = first.executor_id
    first.release()
    again = ExecutorSlot.claim(tmp_path)
    assert again.executor_id == name
    again.release()
    second.release()
