"""kill -9 of real worker processes (SQLite in WAL mode, shared by the processes): runs
resume at their last finished step, approvals survive full restarts, a non-idempotent call
cut short asks a human before it runs again, and a survivor takes over a dead worker."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable_agents import agents, arm, calls, count_dir, is_ready
from durable_support import (
    assert_events_once,
    baseline,
    sqlite_url,
    wait_for,
    wait_until,
    worker_env,
    workers,
    workflows_of,
)
from figures import figure
from loopwise.durable import DurableEngine
from loopwise.messages import dump_messages

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    monkeypatch.setenv("LW_COUNT_DIR", str(path))
    return path


@pytest.fixture
async def api(tmp_path: Path, counts: Path) -> AsyncIterator[DurableEngine]:
    """An API-only engine (no workers) on the database the worker processes share."""
    engine = DurableEngine(agents, database=sqlite_url(tmp_path), workers=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def model_turns(tag: str) -> Counter[str]:
    return Counter(line.split()[2] for line in calls(f"model {tag} "))


def tool_calls(tag: str) -> Counter[str]:
    return Counter(line.split()[2] for line in calls("tool ") if line.split()[2].startswith(tag))


async def test_kill9_mid_model_mid_tool_and_between_steps_then_restart(
    api: DurableEngine, tmp_path: Path, counts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = {
        "ka": "ka note note note",  # killed while the model answers turn 1
        "kb": "kb note note*2 note",  # killed inside a tool call of turn 1
        "kc": "kc" + " note" * 12 + " note*3" + " note" * 12,  # killed at a random point
    }
    arm("model-ka-1")
    arm("tool-kb-1-1")
    with workers(api.store.url, counts) as pool:
        first = await asyncio.to_thread(pool.start, "w1")
        ids = {tag: (await api.submit("worker", tasks[tag])).id for tag in ("ka", "kb")}
        await wait_until(lambda: is_ready("model-ka-1") and is_ready("tool-kb-1-1"), what="blocks")
        ids["kc"] = (await api.submit("worker", tasks["kc"])).id
        while True:  # kill wherever kc is once it is under way
            if len(await api.events(ids["kc"])) >= 40:
                break
            await asyncio.sleep(0.002)
        pool.kill(first)
        killed_at = {tag: (await api.get(run_id)).steps for tag, run_id in ids.items()}
        await asyncio.to_thread(pool.start, "w1")  # same executor id: DBOS recovers its runs
        done = {tag: await wait_for(api, run_id) for tag, run_id in ids.items()}

    assert {r.status for r in done.values()} == {"completed"}
    for tag, task in tasks.items():
        expected, events = await baseline(task, tmp_path / f"baseline-{tag}", monkeypatch)
        assert dump_messages(await api.transcript(ids[tag])) == expected, tag
        assert await assert_events_once(api, ids[tag]) == events, tag

    # ka: only the model call in flight ran again; every tool ran once.
    assert model_turns("ka") == {"0": 1, "1": 2, "2": 1, "3": 1}
    assert set(tool_calls("ka").values()) == {1}
    # kb: only the tool call in flight ran again; its sibling and the model ran once.
    assert set(model_turns("kb").values()) == {1}
    assert tool_calls("kb") == {"kb-0-0": 1, "kb-1-0": 1, "kb-1-1": 2, "kb-2-0": 1}
    # kc: at most the one step in flight at the kill ran twice.
    again = [k for k, n in (model_turns("kc") + tool_calls("kc")).items() if n > 1]
    assert all(n <= 2 for n in (model_turns("kc") + tool_calls("kc")).values())
    assert len(again) <= 1, again
    figure(
        f"kill -9 (SQLite, restart with the same executor id): 3 runs killed at steps "
        f"{sorted(killed_at.values())}, lost 0; repeated steps: ka model turn 1, kb tool "
        f"kb-1-1, kc {again or 'none'}; transcripts and event counts equal the no-crash runs"
    )


async def test_approval_survives_a_full_restart(api: DurableEngine, counts: Path) -> None:
    with workers(api.store.url, counts) as pool:
        worker = await asyncio.to_thread(pool.start, "w1")
        run = await api.submit("worker", "ap note delete note")
        paused = await wait_for(api, run.id, {"input_required"})
        assert [p.call_id for p in paused.pending_approvals] == ["ap-1-0"]
        pool.kill(worker)
        # Decided while no worker runs: the decision is kept in the database.
        decided = await api.decide(run.id, "ap-1-0", approve=True)
        assert decided.status == "queued"
        resumed = f"{run.id}.1"  # the next segment's workflow, queued with the decision
        assert (await workflows_of(api, run.id))[resumed][0] == "ENQUEUED"
        await asyncio.to_thread(pool.start, "w2")
        done = await wait_for(api, run.id)
    assert done.status == "completed"
    # Nothing ran the approved call before a worker came back: the segment holding it was
    # dequeued and run by w2 (started after the window with no worker), and it ran once.
    # (Segment 0 may have been killed before DBOS marked it done, so it is not checked.)
    assert (await workflows_of(api, run.id))[resumed] == ("SUCCESS", "w2")
    assert calls("tool delete") == ["tool delete ap-1-0 ap.1.0 approved=True"]
    assert model_turns("ap") == {"0": 1, "1": 1, "2": 1, "3": 1}  # none re-ran
    assert tool_calls("ap") == {"ap-0-0": 1, "ap-1-0": 1, "ap-2-0": 1}
    await assert_events_once(api, run.id)
    figure(
        "approval across a full restart (kill -9, decide with no worker, new worker): resumed 1/1"
    )


async def test_interrupted_non_idempotent_call_asks_before_running_again(
    api: DurableEngine, counts: Path
) -> None:
    arm("tool-em1-0-0")
    arm("tool-em2-0-0")
    with workers(api.store.url, counts) as pool:
        worker = await asyncio.to_thread(pool.start, "w1")
        first = await api.submit("worker", "em1 email note")
        second = await api.submit("worker", "em2 email note")
        await wait_until(lambda: is_ready("tool-em1-0-0") and is_ready("tool-em2-0-0"))
        pool.kill(worker)
        await asyncio.to_thread(pool.start, "w1")
        for run in (first, second):
            paused = await wait_for(api, run.id, {"input_required"})
            [pending] = paused.pending_approvals
            assert pending.reason == "interrupted"
            assert pending.tool == "email"
        assert len(calls("tool email em1-0-0")) == len(calls("tool email em2-0-0")) == 1
        await api.decide(first.id, "em1-0-0", approve=True)
        await api.decide(second.id, "em2-0-0", approve=False, reason="already sent")
        approved, rejected = await wait_for(api, first.id), await wait_for(api, second.id)
    assert approved.status == rejected.status == "completed"
    assert calls("tool email em1-0-0") == [
        "tool email em1-0-0 approved=False",
        "tool email em1-0-0 approved=True",
    ]
    assert len(calls("tool email em2-0-0")) == 1
    assert "rejected by the user: already sent" in (rejected.output or "")
    for run in (first, second):
        await assert_events_once(api, run.id)
    figure(
        "non-idempotent call in flight at kill -9: 2/2 asked for approval (reason "
        "'interrupted') instead of running again"
    )


async def test_a_surviving_worker_takes_over_a_dead_one(api: DurableEngine, counts: Path) -> None:
    with workers(api.store.url, counts) as pool:
        started = await asyncio.gather(
            asyncio.to_thread(pool.start, "w1"), asyncio.to_thread(pool.start, "w2")
        )
        arm("tool-tk-1-0")
        run = await api.submit("worker", "tk note note note")
        await wait_until(lambda: is_ready("tool-tk-1-0"), what="the tool to block")
        pid = int((count_dir() / "ready-tool-tk-1-0").read_text())
        victim = next(p for p in started if p.pid == pid)
        killed = time.perf_counter()
        pool.kill(victim)
        done = await wait_for(api, run.id, within=30)
        takeover = time.perf_counter() - killed
    assert done.status == "completed"
    assert tool_calls("tk") == {"tk-0-0": 1, "tk-1-0": 2, "tk-2-0": 1}
    assert set(model_turns("tk").values()) == {1}
    await assert_events_once(api, run.id)
    figure(
        f"takeover (SQLite, 2 workers, heartbeat 0.5 s, dead after 2 s): the killed worker's "
        f"run finished on the survivor {takeover:.1f} s after kill -9"
    )


async def test_the_same_key_from_two_processes_makes_one_run(api: DurableEngine) -> None:
    script = (
        "import asyncio, sys\n"
        "from durable_agents import agents\n"
        "from loopwise.durable import DurableEngine\n"
        "async def main():\n"
        "    e = DurableEngine(agents, database=sys.argv[1], workers=False)\n"
        "    await e.start()\n"
        "    made = await asyncio.gather(*[e.submit('worker', 'ik note', idempotency_key='k')"
        " for _ in range(10)])\n"
        "    print(' '.join({r.id for r in made}))\n"
        "    await e.stop()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            api.store.url,
            env=worker_env(count_dir()),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        outputs = [(await p.communicate())[0].decode().split() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    ids = {i for out in outputs for i in out}
    assert len(ids) == 1, outputs
    assert len((await api.list())[0]) == 1
    figure("idempotency: 2 processes x 10 concurrent submits with one key -> runs created = 1")


class _Planted:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


async def test_tampered_rows_are_rejected_not_executed(
    api: DurableEngine, counts: Path, tmp_path: Path
) -> None:
    planted = tmp_path / "unpickled"
    database = api.store.url.removeprefix("sqlite:///")
    pickled = base64.b64encode(pickle.dumps(_Planted(planted))).decode()
    queued = await api.submit("worker", "tp note")  # no worker yet: it waits in the queue
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE workflow_input SET inputs = ? WHERE workflow_uuid = ?", (pickled, queued.id)
        )
        db.execute(
            "UPDATE workflow_status SET serialization = 'py_pickle' WHERE workflow_uuid = ?",
            (queued.id,),
        )
    with workers(api.store.url, counts) as pool:
        await asyncio.to_thread(pool.start, "w1")
        paused = await api.submit("worker", "ts delete")
        await wait_for(api, paused.id, {"input_required"})
        forged = json.dumps({"seq": 1, "result": {"status": "input_required"}, "messages": [1]})
        with sqlite3.connect(database) as db:
            db.execute("UPDATE loopwise_states SET state = ? WHERE run_id = ?", (forged, paused.id))
        await api.decide(paused.id, "ts-0-0", approve=True)
        failed = await wait_for(api, paused.id)
        normal = await wait_for(api, (await api.submit("worker", "tq note")).id)
    assert not planted.exists()
    # Never executed: still queued, or already closed by a worker's reconciler.
    tampered = await api.get(queued.id)
    assert tampered.status in ("queued", "failed"), tampered
    if tampered.status == "failed":
        assert (tampered.error or "").startswith("the run's workflow ended with DBOS status ERROR")
    assert calls("tool note tp") == []
    assert failed.status == "failed" and "malformed" in (failed.error or "")
    assert calls("tool delete") == []
    assert normal.status == "completed"
    figure("tampered rows (pickled workflow input, forged saved state): 2 rejected, executed 0")
