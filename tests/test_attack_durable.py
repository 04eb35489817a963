"""Lease fencing with real worker processes (attack class 25): a worker is stopped with
SIGSTOP inside six runs' steps, a second worker takes them over once the first one's
heartbeat is stale, decisions are made, then the first worker gets SIGCONT. Once resumed it
must start no step and write nothing; a non-idempotent charge takes effect at most once per
approval beyond its first attempt (the attempt already running cannot be un-run).

The runs (``fencing_agents``): s1-s3 wait inside a ``charge`` call (s1: approved and rerun
before the resume, its first attempt then completes; s2: its first attempt completes at
the resume, before anyone approves; s3: never released, the lease watcher stops it), s4
inside a model call, s5 inside an idempotent ``note`` call, s6 between two steps (held
after a recorded result, before the next write).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from durable_support import (
    TESTS,
    assert_events_once,
    postgres_database,
    sqlite_url,
    wait_for,
    wait_until,
    worker_env,
)
from fencing_agents import agents, arm, lines, ready, release
from figures import figure
from loopwise.durable import DurableEngine, RunRecord, StoredEvent
from loopwise.durable.fencing import late_result

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUNS = {
    "s1": ("s1 charge note", "tool-s1-0-0"),
    "s2": ("s2 charge note", "tool-s2-0-0"),
    "s3": ("s3 charge note", "tool-s3-0-0"),
    "s4": ("s4 note note", "model-s4-1"),
    "s5": ("s5 note note", "tool-s5-1-0"),
    "s6": ("s6 note refund", "after-s6-0-0"),
}


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
async def api(database: str, counts: Path) -> AsyncIterator[DurableEngine]:
    engine = DurableEngine(agents, database=database, workers=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


class Worker:
    """A worker process (``tests/durable_worker.py``) whose stderr is kept in a file."""

    def __init__(self, database: str, counts: Path, executor: str):
        self.log = counts / f"{executor}.stderr"
        env = worker_env(
            counts,
            LW_DB=database,
            LW_EXECUTOR=executor,
            LW_AGENTS="fencing_agents",
            LW_HEARTBEAT="0.5",
            LW_DEAD_AFTER="2",
        )
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(TESTS / "durable_worker.py")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.kill()
            raise AssertionError(f"worker {executor} did not start: {self.log.read_text()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def fenced(self, run_id: str) -> bool:
        return any(
            "lost its lease" in line and run_id in line
            for line in self.log.read_text().splitlines()
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def attempts_of(engine: DurableEngine) -> list[tuple[Any, ...]]:
    with engine.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT run_id, call_id, state, step_id, updated_at FROM loopwise_tool_attempts "
                "ORDER BY run_id, call_id"
            )
        )
        return [tuple(r) for r in rows]


async def snapshot(
    engine: DurableEngine, ids: dict[str, str]
) -> tuple[dict[str, list[StoredEvent]], dict[str, RunRecord], list[tuple[Any, ...]]]:
    events = {tag: await engine.events(run_id, limit=5000) for tag, run_id in ids.items()}
    rows = {tag: await engine.get(run_id) for tag, run_id in ids.items()}
    return events, rows, attempts_of(engine)


def after(pid: int, since: float) -> list[str]:
    """Lines the process ``pid`` logged after ``since``."""
    found = []
    for line in lines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("pid") == str(pid) and float(fields.get("t", 0)) > since:
            found.append(" ".join(line.split()[:4]))
    return found


def holds_locks(engine: DurableEngine, ids: dict[str, str]) -> bool:
    """Whether a stopped worker still holds a write lock others need: SQLite's database
    lock, or on PostgreSQL its heartbeat row or a lease row."""
    if engine.store.is_sqlite:
        path = engine.store.url.removeprefix("sqlite:///")
        probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    try:
        with engine.store.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            conn.execute(
                sa.text("SELECT 1 FROM loopwise_executors WHERE executor_id = 'victim' FOR UPDATE")
            )
            conn.execute(
                sa.text("SELECT 1 FROM loopwise_leases WHERE run_id = ANY(:ids) FOR UPDATE"),
                {"ids": list(ids.values())},
            )
        return False
    except sa.exc.OperationalError:
        return True


async def stop_outside_a_transaction(
    victim: Worker, engine: DurableEngine, ids: dict[str, str]
) -> float:
    """SIGSTOP the worker at a moment it holds no write lock (a worker stopped inside a
    transaction holds it until it runs again: on SQLite the whole database)."""
    for _ in range(50):
        victim.signal(signal.SIGSTOP)
        stopped = time.perf_counter()
        if not await asyncio.to_thread(holds_locks, engine, ids):
            return stopped
        victim.signal(signal.SIGCONT)
        await asyncio.sleep(0.05)
    raise AssertionError("the worker always held a write lock when stopped")


async def test_a_worker_resumed_after_takeover_starts_nothing_and_records_nothing(
    api: DurableEngine, counts: Path, database: str
) -> None:
    victim = Worker(database, counts, "victim")
    survivor: Worker | None = None
    try:
        for _, key in RUNS.values():
            arm(key)
        ids = {tag: (await api.submit("payer", task)).id for tag, (task, _) in RUNS.items()}
        await wait_until(
            lambda: all(ready(key) == victim.pid for _, key in RUNS.values()),
            within=30,
            what="every run to wait in the victim",
        )
        survivor = await asyncio.to_thread(Worker, database, counts, "survivor")
        stopped = await stop_outside_a_transaction(victim, api, ids)
        # The survivor takes the six runs over; the charges come back as interrupted.
        for tag in ("s1", "s2", "s3"):
            paused = await wait_for(api, ids[tag], {"input_required"}, within=60)
            [pending] = paused.pending_approvals
            assert pending.reason == "interrupted", pending
            assert "may still be running" in (paused.detail or ""), paused.detail
        takeover = time.perf_counter() - stopped
        for tag in ("s4", "s5"):
            assert (await wait_for(api, ids[tag], within=60)).status == "completed"
        assert (await wait_for(api, ids["s6"], {"input_required"}, within=60)).pending_approvals
        for tag in ("s1", "s3"):  # approved and rerun while the first attempt is stopped
            await api.decide(ids[tag], f"{tag}-0-0", approve=True)
            assert (await wait_for(api, ids[tag], within=60)).status == "completed"
        for tag in ("s1", "s2", "s4", "s5", "s6"):  # their calls complete as soon as it runs
            release(RUNS[tag][1])
        before = await snapshot(api, ids)
        resumed = time.time()
        victim.signal(signal.SIGCONT)
        await wait_until(
            lambda: all(victim.fenced(ids[t]) for t in ids),
            within=30,
            what="the resumed worker to find every lease lost",
        )
        fenced_in = time.time() - resumed
        release(RUNS["s3"][1])  # too late: the watcher has stopped that call
        await wait_until(  # the s2 charge that completed at the resume left its result
            lambda: late_result(api.store, ids["s2"], "s2-0-0", {"amount": 5}) is not None,
            what="the late result of s2",
        )
        assert await snapshot(api, ids) == before  # the resumed worker wrote nothing
        late = after(victim.pid, resumed)
        assert not [line for line in late if line.endswith("start")], late
        assert sorted(late) == [
            "model s4 1 done",
            "tool charge s1-0-0 effect",
            "tool charge s2-0-0 effect",
            "tool note s5-1-0 effect",
        ], late
        victim.kill()
        await api.decide(ids["s2"], "s2-0-0", approve=True)
        await api.decide(ids["s6"], "s6-1-0", approve=True)
        done = {tag: await wait_for(api, run_id, within=60) for tag, run_id in ids.items()}
    finally:
        victim.kill()
        if survivor is not None:
            survivor.kill()
    assert {r.status for r in done.values()} == {"completed"}, done
    effects = {t: len(lines("tool", "charge", f"{t}-0-0", "effect")) for t in ("s1", "s2", "s3")}
    # s1: its first attempt was running and completed after the rerun (1 + 1 approval);
    # s2: the approved rerun used the late result; s3: the stopped attempt never ran on.
    assert effects == {"s1": 2, "s2": 1, "s3": 1}, effects
    assert len(lines("model", "s4", "2", "start")) == len(lines("model", "s5", "2", "start")) == 1
    for run_id in ids.values():
        await assert_events_once(api, run_id)
    kind = database.split(":")[0]
    figure(
        f"lease fencing ({kind}, 2 worker processes, SIGSTOP inside 6 runs' steps): taken "
        f"over in {takeover:.1f} s; after SIGCONT the stale worker found 6/6 leases lost in "
        f"{fenced_in:.1f} s, started 0 steps and wrote 0 rows; non-idempotent effects "
        f"{effects['s1']}/{effects['s2']}/{effects['s3']} for approvals 1/1/1 (a stale "
        "attempt already running completes: at most 1 + approvals)"
    )
