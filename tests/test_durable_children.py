"""kill -9 of a worker while child runs (agents used as tools) are mid-run, SQLite and
PostgreSQL: on restart each child replays its finished model and tool calls from their
checkpoints and makes only the rest, so every call happens once across both processes; the
run ends with the transcript, events and usage of a run that never crashed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from child_agents import agents, ledger
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
from loopwise.durable import DurableEngine, RunRecord
from loopwise.events import Event, ToolResulted, parse_event
from loopwise.messages import dump_messages

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]


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


def made(who: str, tag: str) -> Counter[str]:
    """How often each model call (``<tag> <turn>``) of ``who`` was made."""
    return Counter(line.split(" ", 1)[1] for line in calls(f"{who} {tag}"))


def shape(events: list[Event], top: str) -> dict[str, list[str]]:
    """Each run's event types in order, runs named by their id after the top run's."""
    runs: dict[str, list[str]] = {}
    for e in events:
        runs.setdefault(e.run_id.removeprefix(top), []).append(e.type)
    return runs


async def no_crash(task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same task run in-process without the engine (its calls logged elsewhere)."""
    where = tmp_path / f"no-crash-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(where.mkdir)
    with monkeypatch.context() as m:
        m.setenv("LW_COUNT_DIR", str(where))
        run_id = f"run_{uuid.uuid4().hex}"
        stream = agents["chief"].stream(task, run_id=run_id, text_deltas=False)
        events = [e async for e in stream]
    return stream.result, shape(events, run_id)


async def crash_and_resume(
    api: DurableEngine, counts: Path, task: str, blocks: list[str]
) -> tuple[RunRecord, dict[str, int], int]:
    """Submit ``task``; kill -9 the worker once every armed call in ``blocks`` is reached;
    restart it. Returns the finished run, the model calls and ledger lines made before the
    kill."""
    for key in blocks:
        arm(key)
    with workers(api.store.url, counts) as pool:
        first = await asyncio.to_thread(pool.start, "w1", LW_AGENTS="child_agents")
        run = await api.submit("chief", task)
        await wait_until(lambda: all(is_ready(k) for k in blocks), what=" and ".join(blocks))
        before = len(calls("scribe ")), len(ledger())
        stored = len(await api.events(run.id, limit=5000))
        pool.kill(first)
        await asyncio.to_thread(pool.start, "w1", LW_AGENTS="child_agents")
        done = await wait_for(api, run.id)
    return done, {"scribe calls": before[0], "ledger lines": before[1]}, stored


async def same_as_no_crash(
    api: DurableEngine, done: RunRecord, task: str, tmp_path: Path, mp: pytest.MonkeyPatch
) -> int:
    """Transcript, per-run events and totals equal a run that never crashed; returns the
    number of stored events."""
    expected, runs = await no_crash(task, tmp_path, mp)
    assert done.status == "completed", done
    assert done.output == expected.output
    assert dump_messages(await api.transcript(done.id)) == dump_messages(expected.messages)
    count = await assert_events_once(api, done.id)
    stored = [parse_event(e.data) for e in await api.events(done.id, limit=5000)]
    assert shape(stored, done.id) == runs
    assert done.usage == asdict(expected.usage)
    assert (done.steps, done.tool_calls) == (expected.steps, expected.tool_calls)
    return count


async def test_a_child_killed_mid_run_replays_its_finished_calls(
    api: DurableEngine, counts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "one 1 4"
    done, before, stored = await crash_and_resume(api, counts, task, ["scribe-one.0-2"])
    assert before == {"scribe calls": 2, "ledger lines": 2}  # killed at its 3rd model call
    events = await same_as_no_crash(api, done, task, tmp_path, monkeypatch)
    assert made("scribe", "one.0") == {f"one.0 {t}": 1 for t in range(5)}
    assert Counter(ledger()) == {f"one.0.{t}": 1 for t in range(4)}
    assert made("chief", "one") == {"one 0": 1, "one 1": 1}
    figure(
        f"kill -9 mid-child ({api.store.url.split(':')[0]}): the child had made 2 of 5 model "
        f"calls; after restart each of its 5 model calls and 4 tool calls ran once; "
        f"{stored} events stored before the kill, {events} after (as a no-crash run)"
    )


async def test_two_concurrent_children_killed_mid_run(
    api: DurableEngine, counts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "two 2 3"
    # Killed with the first child at its 3rd model call, the second at its 1st. After the
    # restart the first child's next real call is slow and the second's are not: the two
    # children's events interleave otherwise than before the kill.
    blocks = ["scribe-two.0-2", "scribe-two.1-0"]
    (counts / "slow-scribe-two.0-2").touch()
    done, before, _ = await crash_and_resume(api, counts, task, blocks)
    assert before == {"scribe calls": 2, "ledger lines": 2}
    await same_as_no_crash(api, done, task, tmp_path, monkeypatch)
    for j in (0, 1):
        assert made("scribe", f"two.{j}") == {f"two.{j} {t}": 1 for t in range(4)}
    assert Counter(ledger()) == {f"two.{j}.{t}": 1 for j in (0, 1) for t in range(3)}
    assert made("chief", "two") == {"two 0": 1, "two 1": 1}


async def test_a_grandchild_killed_mid_run_replays_its_finished_calls(
    api: DurableEngine, counts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "nest 1 3 nested"
    done, before, _ = await crash_and_resume(api, counts, task, ["scribe-nest.0.g-2"])
    assert before == {"scribe calls": 2, "ledger lines": 2}
    await same_as_no_crash(api, done, task, tmp_path, monkeypatch)
    assert made("scribe", "nest.0.g") == {f"nest.0.g {t}": 1 for t in range(4)}
    assert made("boss", "nest.0") == {"nest.0 0": 1, "nest.0 1": 1}
    assert Counter(ledger()) == {f"nest.0.g.{t}": 1 for t in range(3)}


async def test_a_child_non_idempotent_call_cut_short_is_not_run_again(
    api: DurableEngine, counts: Path
) -> None:
    done, before, _ = await crash_and_resume(api, counts, "cut 1 3", ["append-cut.0-a1"])
    assert before == {"scribe calls": 2, "ledger lines": 1}
    assert done.status == "completed", done
    assert Counter(ledger()) == {"cut.0.0": 1, "cut.0.2": 1}  # the cut call never ran again
    assert made("scribe", "cut.0") == {f"cut.0 {t}": 1 for t in range(4)}
    stored = [parse_event(e.data) for e in await api.events(done.id, limit=5000)]
    [result] = [e for e in stored if isinstance(e, ToolResulted) and e.call_id == "cut.0-a1"]
    assert result.is_error and "cut short by a crash" in result.content
    assert "was not run again" in (done.output or "")
    await assert_events_once(api, done.id)
