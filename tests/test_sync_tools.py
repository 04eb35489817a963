"""Plain ``def`` tools: a hung call is abandoned, not waited for; exits become errors."""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import shlex
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import loopwise._sync as sync_module
from loopwise import Agent, ToolResultPart, tool
from loopwise._sync import SyncRunner, ToolExit, ToolThreadsExhausted, abandoned_threads
from loopwise.models.testing import ScriptedModel, call

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="unset")


def results_of(model: ScriptedModel, request: int) -> list[ToolResultPart]:
    last = model.requests[request].messages[-1]
    return [p for p in last.parts if isinstance(p, ToolResultPart)]  # type: ignore[union-attr]


class Hang:
    """Blocks tool calls until released; the end of the test releases them and joins
    their threads, so no abandoned call outlives its test."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.threads: list[threading.Thread] = []

    def wait(self, seconds: float) -> bool:
        self.threads.append(threading.current_thread())
        return self.event.wait(seconds)

    def release(self) -> None:
        self.event.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


@pytest.fixture
def hang() -> Iterator[Hang]:
    blocker = Hang()
    yield blocker
    blocker.release()


def thread_safe_event() -> tuple[asyncio.Event, Callable[[], None]]:
    """An event the loop can await and a function any thread may call to set it."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()

    def note() -> None:
        loop.call_soon_threadsafe(event.set)

    return event, note


# ---------------------------------------------------------------------------------------
# Through the agent


def test_a_timed_out_sync_tool_does_not_hold_the_run_open(hang: Hang) -> None:
    @tool(timeout=0.2)
    def block() -> str:
        """Block for 4 s."""
        hang.wait(4)
        return "late"

    model = ScriptedModel([call("block"), "gave up"])
    started = time.perf_counter()
    result = Agent(model, tools=[block]).run_sync("go")
    elapsed = time.perf_counter() - started
    assert elapsed < 2, f"run_sync waited {elapsed:.1f} s for a call that had timed out"
    assert result.status == "completed" and result.output == "gave up"
    observation = results_of(model, 1)[0]
    assert observation.is_error and "TimeoutError" in observation.content


def test_hung_calls_do_not_starve_a_quick_one(hang: Hang) -> None:
    @tool(timeout=0.2)
    def block(n: int) -> str:
        """Block until released."""
        hang.wait(30)
        return f"late {n}"

    @tool(timeout=5)
    def quick() -> str:
        """Answer at once."""
        return "quick answer"

    model = ScriptedModel([[call("block", n=i) for i in range(8)], call("quick"), "done"])
    result = Agent(model, tools=[block, quick]).run_sync("go")
    assert result.status == "completed"
    hung = results_of(model, 1)
    assert len(hung) == 8 and all("TimeoutError" in r.content for r in hung)
    answer = results_of(model, 2)[0]
    assert not answer.is_error and answer.content == "quick answer"


def test_sys_exit_in_a_tool_is_an_error_observation() -> None:
    @tool
    def grep(argv: str) -> str:
        """Parse command-line arguments."""
        parser = argparse.ArgumentParser(prog="grep", add_help=False)
        parser.add_argument("--count", type=int)
        return str(parser.parse_args(shlex.split(argv)))

    model = ScriptedModel([call("grep", argv="--bogus"), call("grep", argv="--count 2"), "ok"])
    result = Agent(model, tools=[grep]).run_sync("go")
    assert result.status == "completed" and result.output == "ok"
    first = results_of(model, 1)[0]
    assert first.is_error
    assert first.content.startswith("ERROR: ToolExit: the tool called sys.exit(2)")
    assert "count=2" in results_of(model, 2)[0].content


@pytest.mark.parametrize("is_async", [False, True])
def test_keyboard_interrupt_in_a_tool_is_an_error_observation(is_async: bool) -> None:
    def interrupt() -> str:
        """Interrupt."""
        raise KeyboardInterrupt

    async def interrupt_async() -> str:
        """Interrupt."""
        raise KeyboardInterrupt

    t = tool(name="interrupt")(interrupt_async if is_async else interrupt)
    model = ScriptedModel([call("interrupt"), "still here"])
    result = Agent(model, tools=[t]).run_sync("go")
    assert result.status == "completed" and result.output == "still here"
    observation = results_of(model, 1)[0]
    assert observation.is_error
    assert "ToolExit: the tool raised KeyboardInterrupt" in observation.content


def test_sys_exit_in_an_async_tool_is_an_error_observation() -> None:
    @tool
    async def leave() -> str:
        """Exit."""
        raise SystemExit("bye")

    model = ScriptedModel([call("leave"), "still here"])
    result = Agent(model, tools=[leave]).run_sync("go")
    assert result.status == "completed" and result.output == "still here"
    assert "the tool called sys.exit('bye')" in results_of(model, 1)[0].content


def test_context_variables_reach_the_tool() -> None:
    @tool
    def whoami() -> str:
        """Which request this is."""
        return REQUEST.get()

    token = REQUEST.set("request-42")
    try:
        model = ScriptedModel([call("whoami"), "done"])
        Agent(model, tools=[whoami]).run_sync("go")
    finally:
        REQUEST.reset(token)
    assert results_of(model, 1)[0].content == "request-42"


def test_parallel_results_keep_the_call_order() -> None:
    second_done = threading.Event()

    @tool(timeout=10)
    def first() -> str:
        """Finishes after second."""
        assert second_done.wait(5), "the calls did not run at the same time"
        return "one"

    @tool
    def second() -> str:
        """Finishes first."""
        second_done.set()
        return "two"

    model = ScriptedModel([[call("first"), call("second")], "done"])
    Agent(model, tools=[first, second]).run_sync("go")
    assert [(r.name, r.content) for r in results_of(model, 1)] == [
        ("first", "one"),
        ("second", "two"),
    ]


# ---------------------------------------------------------------------------------------
# The runner itself


def shout(text: str) -> str:
    return text.upper()


def _worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def test_calls_beyond_the_bound_queue_and_all_finish() -> None:
    gate = threading.Event()
    lock = threading.Lock()
    running = peak = 0

    async def go() -> list[int]:
        two_running, note_two = thread_safe_event()

        def work(n: int) -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
                if running == 2:
                    note_two()
            gate.wait(5)
            with lock:
                running -= 1
            return n

        runner = SyncRunner(max_workers=2, name="bound")
        tasks = [asyncio.create_task(runner.run(work, {"n": i}, None)) for i in range(5)]
        await asyncio.wait_for(two_running.wait(), 5)
        assert runner.workers == 2
        gate.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(go()) == [0, 1, 2, 3, 4]
    assert peak == 2


def test_a_timed_out_call_frees_its_slot(hang: Hang) -> None:
    async def go() -> str:
        runner = SyncRunner(max_workers=1, name="frees")
        with pytest.raises(TimeoutError):
            await runner.run(hang.wait, {"seconds": 30}, 0.05)
        assert runner.workers == 0
        return str(await runner.run(shout, {"text": "ok"}, 1.0))

    assert asyncio.run(go()) == "OK"
    still_running = abandoned_threads()
    assert still_running >= 1
    hang.release()  # the hung call returns; its thread exits and stops counting
    assert abandoned_threads() <= still_running - 1


def test_a_call_cancelled_while_queued_never_runs(hang: Hang) -> None:
    ran: list[str] = []

    async def go() -> str:
        started, note_started = thread_safe_event()

        def note(tag: str) -> str:
            ran.append(tag)
            if tag == "hung":
                note_started()
                hang.wait(30)
            return tag

        runner = SyncRunner(max_workers=1, name="queued")
        hung = asyncio.create_task(runner.run(note, {"tag": "hung"}, None))
        await asyncio.wait_for(started.wait(), 5)
        queued = asyncio.create_task(runner.run(note, {"tag": "queued"}, None))
        await asyncio.sleep(0)
        queued.cancel()
        hung.cancel()
        for task in (queued, hung):
            with pytest.raises(asyncio.CancelledError):
                await task
        return str(await runner.run(note, {"tag": "after"}, 1.0))

    assert asyncio.run(go()) == "after"
    assert ran == ["hung", "after"]


def test_too_many_abandoned_calls_fail_new_ones_at_once(
    hang: Hang, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        runner = SyncRunner(name="capped")
        with pytest.raises(TimeoutError):
            await runner.run(hang.wait, {"seconds": 30}, 0.05)
        monkeypatch.setattr(sync_module, "MAX_ABANDONED", 1)  # the hung call is one
        with pytest.raises(ToolThreadsExhausted, match="still running"):
            await runner.run(shout, {"text": "x"}, None)

    asyncio.run(go())


def test_exceptions_come_back_to_the_caller() -> None:
    class Odd(BaseException):
        pass

    def fail(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value")
        if kind == "odd":
            raise Odd("odd")
        if kind == "stop":
            raise StopIteration
        raise SystemExit(3)

    async def go() -> None:
        runner = SyncRunner(name="raises")
        with pytest.raises(ValueError, match="bad value"):
            await runner.run(fail, {"kind": "value"}, None)
        with pytest.raises(Odd):
            await runner.run(fail, {"kind": "odd"}, None)
        with pytest.raises(ToolExit, match=r"sys\.exit\(3\)"):
            await runner.run(fail, {"kind": "exit"}, None)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await runner.run(fail, {"kind": "stop"}, 5.0)

    asyncio.run(go())


def test_idle_workers_exit_and_close_refuses_new_calls() -> None:
    async def go(runner: SyncRunner) -> str:
        return str(await runner.run(shout, {"text": "a"}, None))

    idle = SyncRunner(idle_seconds=0.05, name="idle-exit")
    assert asyncio.run(go(idle)) == "A"
    for thread in _worker_threads("idle-exit"):
        thread.join(5)
    assert not _worker_threads("idle-exit") and idle.workers == 0

    closing = SyncRunner(idle_seconds=60, name="closing")
    assert asyncio.run(go(closing)) == "A"
    assert len(_worker_threads("closing")) == 1
    closing.close()
    for thread in _worker_threads("closing"):
        thread.join(5)
    assert not _worker_threads("closing") and closing.workers == 0
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(go(closing))


def test_inline_is_opt_in_and_never_for_a_timed_call() -> None:
    def where() -> int:
        return threading.get_ident()

    async def go() -> tuple[int, int, int]:
        runner = SyncRunner(inline=lambda fn: fn is where, name="inline")
        here = threading.get_ident()
        plain = await runner.run(where, {}, None)
        timed = await runner.run(where, {}, 5.0)
        threaded = await SyncRunner(name="not-inline").run(where, {}, None)
        return here - plain, here - timed, here - threaded

    same, timed, threaded = asyncio.run(go())
    assert same == 0 and timed != 0 and threaded != 0


def test_tool_call_uses_the_given_runner() -> None:
    @tool
    def name() -> str:
        """The worker thread's name."""
        return threading.current_thread().name

    async def go() -> tuple[str, str]:
        mine = await name.call({}, None, SyncRunner(name="given"))
        default = await name.call({}, None)
        return mine, default

    mine, default = asyncio.run(go())
    assert mine.startswith("given-") and default.startswith("loopwise-tool-default-")


def test_close_lets_a_running_call_finish_then_its_worker_exits() -> None:
    gate = threading.Event()

    async def go() -> str:
        started, note_started = thread_safe_event()

        def work() -> str:
            note_started()
            gate.wait(5)
            return "finished"

        runner = SyncRunner(idle_seconds=60, name="close-busy")
        task = asyncio.create_task(runner.run(work, {}, None))
        await asyncio.wait_for(started.wait(), 5)
        runner.close()
        gate.set()
        return str(await task)

    assert asyncio.run(go()) == "finished"
    for thread in _worker_threads("close-busy"):
        thread.join(5)
    assert not _worker_threads("close-busy")
