"""Images in durable tool results: a tool returning a real PNG keeps it across an approval
segment and across a kill -9 replay, so the model's later requests hold the same image."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from durable_agents import arm, calls, is_ready
from durable_support import assert_events_once, sqlite_url, wait_for, wait_until, workers
from loopwise.durable import DurableEngine
from loopwise.messages import ToolResultPart, UserMessage
from team_agents import agents as team
from team_agents import png_digest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
def counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    monkeypatch.setenv("LW_COUNT_DIR", str(path))
    return path


def seen(tag: str, turn: int) -> list[str]:
    """What each model request of ``turn`` held: ``images=<n> sha=<digests>``."""
    return [line.split(" ", 3)[3] for line in calls(f"viewer {tag} {turn} ")]


async def test_an_image_result_survives_an_approval_segment(tmp_path: Path, counts: Path) -> None:
    engine = DurableEngine(
        team, database=sqlite_url(tmp_path), executor_id="in-process", poll_seconds=0.05
    )
    async with engine:
        run = await engine.submit("viewer", "va erase")
        paused = await wait_for(engine, run.id, {"input_required"})
        [pending] = paused.pending_approvals
        await engine.decide(run.id, pending.call_id, approve=True)
        done = await wait_for(engine, run.id)
        stored = await engine.events(run.id)
        transcript = await engine.transcript(run.id)
        await assert_events_once(engine, run.id)
    assert done.status == "completed", done
    assert done.output == "va saw 1 image(s)"
    picture = f"images=1 sha={png_digest()}"
    assert seen("va", 1) == [picture] and seen("va", 2) == [picture]
    [result] = [e.data for e in stored if e.type == "tool_result" and e.data["name"] == "snapshot"]
    assert (result["content"], result["images"]) == ("the screen", 1)
    parts = [p for m in transcript if isinstance(m, UserMessage) for p in m.parts]
    [snap] = [p for p in parts if isinstance(p, ToolResultPart) and p.name == "snapshot"]
    assert [i.media_type for i in snap.images] == ["image/png"]


@pytest.mark.slow
async def test_an_image_result_survives_a_kill9_replay(tmp_path: Path, counts: Path) -> None:
    api = DurableEngine(team, database=sqlite_url(tmp_path), workers=False)
    async with api:
        arm("viewer-vb-1")  # the model call after the snapshot blocks; the worker dies there
        with workers(api.store.url, counts) as pool:
            first = await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
            run = await api.submit("viewer", "vb")
            await wait_until(lambda: is_ready("viewer-vb-1"), what="the blocked model call")
            pool.kill(first)
            await asyncio.to_thread(pool.start, "w1", LW_AGENTS="team_agents")
            done = await wait_for(api, run.id)
        await assert_events_once(api, run.id)
    assert done.status == "completed", done
    assert done.output == "vb saw 1 image(s)"
    assert calls("snapshot ") == ["snapshot vb-s"]  # replayed from its checkpoint
    picture = f"images=1 sha={png_digest()}"
    assert seen("vb", 1) == [picture, picture]  # the replayed request holds the same image
