"""Shared helpers for the durable-engine tests: worker subprocesses, waiting, baselines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from durable_agents import agents
from loopwise.durable import TERMINAL, DurableEngine, RunRecord
from loopwise.messages import Message, dump_messages

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def worker_env(count_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), env.get("PYTHONPATH", "")])
    env["LW_COUNT_DIR"] = str(count_dir)
    env.update(extra)
    return env


class Workers:
    """Worker subprocesses (``tests/durable_worker.py``), all killed at the end."""

    def __init__(self, database: str, count_dir: Path):
        self.database = database
        self.count_dir = count_dir
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, executor: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "durable_worker.py")],
            env=worker_env(self.count_dir, LW_DB=self.database, LW_EXECUTOR=executor, **env),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready <id>", or "" if it died
        if not line.startswith("ready"):
            proc.kill()
            raise AssertionError(f"worker {executor} did not start (exit {proc.wait()})")
        return proc

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@contextmanager
def workers(database: str, count_dir: Path) -> Iterator[Workers]:
    pool = Workers(database, count_dir)
    try:
        yield pool
    finally:
        pool.close()


async def wait_for(
    engine: DurableEngine,
    run_id: str,
    statuses: frozenset[str] | set[str] = TERMINAL,
    *,
    within: float = 30.0,
) -> RunRecord:
    """Poll the run until its status is one of ``statuses``."""
    deadline = time.monotonic() + within
    while True:
        record = await engine.get(run_id)
        if record.status in statuses:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is still {record.status} after {within} s")
        await asyncio.sleep(0.02)


async def wait_until(check: Any, *, within: float = 30.0, what: str = "condition") -> None:
    """Poll ``check()`` (sync) until it is true."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def worker_caught_up(engine: DurableEngine, *, within: float = 30.0) -> None:
    """Return once this process's worker has run a marker run, submitted now, to its end.

    The engine must run one workflow at a time (``concurrency=1``). Its queue is FIFO and
    DBOS gives the worker's slot back only when a workflow function has returned (cancelled
    or not), so the marker starts only after the workflow running now and every workflow
    queued before it have ended: whatever they would have done, they have done, and a test
    may then assert that something did not happen."""
    if engine.concurrency != 1:
        raise AssertionError("worker_caught_up needs an engine with concurrency=1")
    marker = await engine.submit("worker", "zz")  # no tool calls: one model turn, an answer
    try:
        done = await wait_for(engine, marker.id, within=within)
    except AssertionError as exc:
        raise AssertionError(f"the worker did not catch up (a workflow holds it): {exc}") from None
    assert done.status == "completed", done


async def workflows_of(engine: DurableEngine, run_id: str) -> dict[str, tuple[str, str | None]]:
    """DBOS's workflows of the run's segments: workflow id -> (status, executor id); the
    executor is the one that dequeued and ran the workflow last."""
    found = await engine._client.list_workflows_async(
        workflow_id_prefix=run_id, load_input=False, load_output=False
    )
    return {w.workflow_id: (w.status, w.executor_id) for w in found}


async def assert_events_once(engine: DurableEngine, run_id: str) -> int:
    """Each event stored once, seq 1..N without gaps, ending with run_finished; returns N."""
    stored = await engine.events(run_id, limit=5000)
    seqs = [e.seq for e in stored]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert stored[-1].type == "run_finished"
    return len(stored)


async def baseline(task: str, count_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """The no-crash transcript (JSON) and event count of ``task``, run in-process without
    the engine (its tool calls are logged under ``count_dir``, not the test's)."""
    await asyncio.to_thread(count_dir.mkdir, exist_ok=True)
    with monkeypatch.context() as m:
        m.setenv("LW_COUNT_DIR", str(count_dir))
        stream = agents["worker"].stream(task, run_id=f"run_{uuid.uuid4().hex}", text_deltas=False)
        n = sum([1 async for _ in stream])
    return dump_messages(stream.result.messages), n


def transcript_json(messages: list[Message]) -> str:
    return dump_messages(messages)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


PG_SERVER = "postgresql://{user}@127.0.0.1:5432/{db}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one test (dropped after it).

    Skips, saying why, where no server answers; under CI=true that is a failure."""
    import psycopg

    errors: list[str] = []
    admin: Any = None
    for user in ("postgres", "root"):
        try:
            admin = psycopg.connect(
                PG_SERVER.format(user=user, db="test"), autocommit=True, connect_timeout=3
            )
            break
        except psycopg.OperationalError as exc:
            errors.append(str(exc).strip())
    if admin is None:
        message = f"PostgreSQL on 127.0.0.1:5432 is not reachable: {errors[-1]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"lw_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_SERVER.format(user=user, db=name)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
