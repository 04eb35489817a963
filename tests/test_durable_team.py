"""Teams of agents in the durable service: a parent whose tool is a child agent runs as one
durable run through the real HTTP API (SQLite and PostgreSQL); its events show the tree;
cancelling the parent stops the child; after kill -9 a finished child is not run again and
a child cut short resumes at its call in flight.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_agents import arm, calls, is_ready
from durable_support import (
    assert_events_once,
    postgres_database,
    sqlite_url,
    wait_for,
    wait_until,
    workers,
)
from figures import figure
from loopwise.durable import DurableEngine
from loopwise.events import parse_event
from server_helpers import Api, Frame, service, wait_status
from team_agents import agents as team

pytestmark = [pytest.mark.timeout(120)]


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


def turns(who: str, tag: str) -> Counter[str]:
    return Counter(line.split()[2] for line in calls(f"{who} {tag} "))


def submit(api: Api, agent: str, text: str) -> str:
    reply = api.post("/v1/runs", {"agent": agent, "input": text})
    assert reply.status == 202, reply.body
    return str(reply.json()["id"])


def check_tree(frames: list[Frame], run_id: str) -> str:
    """The child's events sit inside the parent's researcher call, with the tree's ids;
    returns the child's run id."""
    kinds = [(f.data["run_id"], f.event) for f in frames]
    [child_start] = [f for f in frames if f.event == "run_started" and f.data["run_id"] != run_id]
    child = child_start.data["run_id"]
    assert child.startswith(f"{run_id}.")
    assert (child_start.data["parent_run_id"], child_start.data["depth"]) == (run_id, 1)
    parent_start = frames[0]
    assert (parent_start.event, parent_start.data["run_id"]) == ("run_started", run_id)
    assert (parent_start.data["parent_run_id"], parent_start.data["depth"]) == (None, 0)
    called = kinds.index((run_id, "tool_call"))
    resulted = kinds.index((run_id, "tool_result"))
    inside = kinds[called + 1 : resulted]
    assert inside[0] == (child, "run_started") and inside[-1] == (child, "run_finished")
    assert all(owner == child for owner, _ in inside)
    [child_end] = [f for f in frames if f.event == "run_finished" and f.data["run_id"] == child]
    assert child_end.data["parent_run_id"] == run_id
    return str(child)


@pytest.mark.slow
def test_a_team_runs_as_one_durable_run_through_the_service(
    tmp_path: Path, counts: Path, database: str
) -> None:
    with service(tmp_path, agents=team, database=database) as server:
        api = Api(server.url)
        run_id = submit(api, "lead", "ts 2 0")
        frames = api.events(run_id)
        done = wait_status(api, run_id, "completed", "failed", "incomplete", "cancelled")
        again = api.events(run_id, "?after=3")
        shown = subprocess.run(
            [sys.executable, "-m", "loopwise", "runs", "events", run_id, "--url", server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done["status"] == "completed", done
    assert done["output"] == "ts team: ts found 2 things | noted ts.after"
    assert [int(f.id or 0) for f in frames] == list(range(1, len(frames) + 1))
    assert [f.id for f in again] == [f.id for f in frames[3:]]
    child = check_tree(frames, run_id)
    child_events = [f for f in frames if f.data["run_id"] == child]
    assert [f.data["name"] for f in child_events if f.event == "tool_call"] == ["dig", "dig"]
    assert [f.event for f in frames if f.data["run_id"] == run_id].count("tool_call") == 2
    assert frames[-1].data["run_id"] == run_id and frames[-1].data["status"] == "completed"
    # The run's spend includes its child's: 3 model requests each.
    assert done["usage"]["requests"] == 6 and done["steps"] == 3
    assert turns("child", "ts") == {"0": 1, "1": 1, "2": 1}
    # The CLI shows the tree: the child's events indented under the parent's call.
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == len(frames)
    assert sum(1 for line in lines if "│ tool_call" in line and "dig" in line) == 2
    assert sum(1 for line in lines if "│ " in line) == len(child_events)
    assert turns("lead", "ts") == {"0": 1, "1": 1, "2": 1}
    figure(
        f"team through the service ({database.split(':')[0]}): 1 run, {len(frames)} events, "
        f"{len(child_events)} of them the child's (parent_run_id set, depth 1)"
    )


@pytest.mark.slow
def test_cancelling_a_team_run_cancels_its_running_child(tmp_path: Path, counts: Path) -> None:
    with service(tmp_path, agents=team) as server:
        api = Api(server.url)
        run_id = submit(api, "lead", "tc 40 0.2")
        wait_status(api, run_id, "in_progress")
        deadline = time.monotonic() + 20
        while len(calls("child tc ")) < 3:  # the child is digging
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.02)
        reply = api.post(f"/v1/runs/{run_id}/cancel", {})  # keyless: JSON writes only
        assert reply.status == 200, reply.body
        assert reply.json()["status"] == "cancelled"
        frames = api.events(run_id)  # the stream closes: the run is over

        # The child's step is preempted within DBOS's poll (1 s): its calls stop.
        last, settled = len(calls("child tc ")), time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() - settled < 1.0:
            assert time.monotonic() < deadline, "the child kept running after the cancel"
            time.sleep(0.05)
            if len(calls("child tc ")) != last:
                last, settled = len(calls("child tc ")), time.monotonic()
        stored = api.events(run_id)
        run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "cancelled" and run["stop_reason"] == "cancelled"
    assert last < 20, f"{last} child model calls: the child was not stopped"
    assert [f.id for f in stored] == [f.id for f in frames]  # nothing written after the cancel
    ends = {f.data["run_id"]: f.data for f in frames if f.event == "run_finished"}
    [child] = [r for r in ends if r != run_id]
    assert ends[child]["status"] == "cancelled" and ends[child]["parent_run_id"] == run_id
    assert ends[run_id]["status"] == "cancelled"
    assert frames[-1].data["run_id"] == run_id  # the child ends first, then the parent
    figure(
        f"cancel of a team run through the API: parent and child cancelled; the child "
        f"made {last} model calls of 41, none after it was stopped"
    )


# -- kill -9 ------------------------------------------------------------------------------


@pytest.fixture
async def api_engine(tmp_path: Path, counts: Path) -> Any:
    engine = DurableEngine(team, database=sqlite_url(tmp_path), workers=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def child_runs(engine: DurableEngine, run_id: str) -> Counter[str]:
    """How often each child run started in the run's stored events."""
    stored = [parse_event(e.data) for e in await engine.events(run_id, limit=5000)]
    return Counter(e.run_id for e in stored if e.type == "run_started" and e.run_id != run_id)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_finished_child_is_not_run_again_after_kill9(
    api_engine: DurableEngine, counts: Path
) -> None:
    arm("lead-kc-1")  # the parent's model call after the child finished blocks
    with workers(api_engine.store.url, counts) as pool:
        first = await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
        run = await api_engine.submit("lead", "kc 2 0")
        await wait_until(lambda: is_ready("lead-kc-1"), what="the parent's next step")
        assert turns("child", "kc") == {"0": 1, "1": 1, "2": 1}
        pool.kill(first)
        await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
        done = await wait_for(api_engine, run.id)
    assert done.status == "completed", done
    assert done.output == "kc team: kc found 2 things | noted kc.after"
    assert turns("child", "kc") == {"0": 1, "1": 1, "2": 1}  # not run again
    assert Counter(calls("dig kc-")) == {"dig kc-c0": 1, "dig kc-c1": 1}
    assert turns("lead", "kc") == {"0": 1, "1": 2, "2": 1}  # only the step in flight
    assert done.usage["requests"] == 6  # the child's spend is counted again on the replay
    await assert_events_once(api_engine, run.id)
    assert list((await child_runs(api_engine, run.id)).values()) == [1]
    figure("kill -9 after a child agent finished: child model calls re-run 0 of 3")


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_child_cut_short_by_kill9_resumes_at_its_call_in_flight(
    api_engine: DurableEngine, counts: Path
) -> None:
    """The child's finished calls replay from their checkpoints (tests/test_durable_children.py
    covers concurrent and nested children and PostgreSQL)."""
    arm("child-kd-1")  # the child's second model call blocks
    with workers(api_engine.store.url, counts) as pool:
        first = await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
        run = await api_engine.submit("lead", "kd 2 0")
        await wait_until(lambda: is_ready("child-kd-1"), what="the child's second call")
        pool.kill(first)
        await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
        done = await wait_for(api_engine, run.id)
    assert done.status == "completed", done
    assert done.output == "kd team: kd found 2 things | noted kd.after"
    assert turns("child", "kd") == {"0": 1, "1": 2, "2": 1}  # only the call in flight again
    assert Counter(calls("dig kd-")) == {"dig kd-c0": 1, "dig kd-c1": 1}
    assert turns("lead", "kd") == {"0": 1, "1": 1, "2": 1}
    assert done.usage["requests"] == 6
    await assert_events_once(api_engine, run.id)
    assert list((await child_runs(api_engine, run.id)).values()) == [1]
