"""What the loopwise loop costs over a hand-written ReAct loop doing the same work.

Both loops drive the same kind of scripted model (``ScriptedModel``, so the model's own
cost is identical) and the same trivial async tool; the difference is the framework.
Per-step figures are also taken with the same tool as a plain ``def`` (which loopwise runs
off the event loop, on a worker thread; the baseline just calls it).

    .venv/bin/python bench/overhead.py            # full run, plain-text report
    .venv/bin/python bench/overhead.py --quick    # small sizes, a few seconds
    .venv/bin/python bench/overhead.py --json     # the figures as JSON
    .venv/bin/python bench/overhead.py --profile  # also: where loopwise spends a long run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loopwise import Agent, tool
from loopwise.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    Usage,
    UserMessage,
)
from loopwise.models import Model, ModelSettings
from loopwise.models.testing import ScriptedModel, Turn, call

__all__ = [
    "ConcurrencyResult",
    "ImportResult",
    "StepsResult",
    "baseline_run",
    "measure_concurrency",
    "measure_import",
    "measure_steps",
    "profile_steps",
]

SYSTEM = "You are a calculator. Use the add tool, then answer."
TASK = "Add the numbers."
SETTINGS = ModelSettings()

GOAL_STEP_US = 150.0
GOAL_FLAT_RATIO = 1.5
GOAL_CONCURRENCY_RATIO = 1.5
GOAL_IMPORT_MS = 150.0

PEERS_NOTE = "measured earlier on this machine, not in this run"
PEERS: dict[str, dict[str, str]] = {
    "smolagents": {"per_step_200": "1.4 ms", "concurrency_ratio": "10-16x", "import": "0.55-1.9 s"},
    "langgraph": {"per_step_200": "3.0 ms", "concurrency_ratio": "10-16x", "import": "0.55-1.9 s"},
    "pydantic-ai": {
        "per_step_200": "7.7 ms",
        "concurrency_ratio": "10-16x",
        "import": "0.55-1.9 s",
    },
    "openai-agents": {
        "per_step_200": "13 ms",
        "concurrency_ratio": "10-16x",
        "import": "0.55-1.9 s",
    },
}


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def add_sync(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = tool(add)
ADD_SYNC = tool(name="add")(add_sync)
TOOL_FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {"add": add}
SYNC_FUNCTIONS: dict[str, Callable[..., Any]] = {"add": add_sync}
TOOL_DEFS: list[ToolDefinition] = [ADD.definition()]


class StampedModel(ScriptedModel):
    """A ScriptedModel that notes ``perf_counter()`` as each request starts.

    The gaps between stamps are whole steps (model, tool, loop), so per-step cost can be
    compared early and late in one run.
    """

    def __init__(self, turns: Sequence[Turn], *, latency: float = 0.0):
        super().__init__(turns, latency=latency)
        self.stamps: list[float] = []

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        self.stamps.append(time.perf_counter())
        return await super().request(messages, tools, settings)


def script(steps: int) -> list[Turn]:
    """``steps - 1`` calls of ``add`` with distinct arguments, then a final text."""
    turns: list[Turn] = [call("add", a=i, b=1) for i in range(steps - 1)]
    turns.append("The total is done.")
    return turns


# ---------------------------------------------------------------------------------------
# The two loops under test


async def baseline_run(
    model: ScriptedModel, task: str = TASK, *, max_steps: int = 1000, sync: bool = False
) -> str:
    """A minimal hand-written ReAct loop: no validation, budgets, events or detection.

    ``sync``: call the plain ``def`` tool directly (on the event loop) instead of awaiting
    the ``async def`` one.
    """
    messages: list[Message] = [SystemMessage(content=SYSTEM), UserMessage.text(task)]
    for _ in range(max_steps):
        reply = await model.request(messages, TOOL_DEFS, SETTINGS)
        messages.append(reply)
        calls = reply.tool_calls
        if not calls:
            return reply.text
        results = [
            ToolResultPart(
                call_id=c.id,
                name=c.name,
                content=str(
                    SYNC_FUNCTIONS[c.name](**c.args)
                    if sync
                    else await TOOL_FUNCTIONS[c.name](**c.args)
                ),
            )
            for c in calls
        ]
        messages.append(UserMessage(parts=tuple(results)))
    raise RuntimeError(f"the baseline loop did not finish in {max_steps} steps")


def _agent(model: Model, steps: int, sync: bool = False) -> Agent[None, str]:
    return Agent(model, tools=[ADD_SYNC if sync else ADD], system=SYSTEM, max_steps=steps)


async def loopwise_run(agent: Agent[None, str], steps: int) -> str:
    """One loopwise run; fails loudly if it did not complete as scripted."""
    result = await agent.run(TASK)
    if result.status != "completed" or result.steps != steps:
        raise RuntimeError(
            f"loopwise run ended {result.status} ({result.stop_reason}: {result.error or ''}) "
            f"after {result.steps} of {steps} steps; the benchmark would measure nothing"
        )
    return str(result.output)


# ---------------------------------------------------------------------------------------
# (a) per-step overhead


@dataclass(frozen=True, slots=True)
class StepsResult:
    """Medians over ``repeats`` runs of ``steps`` model calls each (times in µs)."""

    steps: int
    repeats: int
    loopwise_us_per_step: float
    baseline_us_per_step: float
    overhead_us_per_step: float
    window: int | None  # steps in each early/late window, None if the run is too short
    loopwise_first_us: float | None
    loopwise_last_us: float | None
    baseline_first_us: float | None
    baseline_last_us: float | None
    overhead_first_us: float | None
    overhead_last_us: float | None
    tool: str = "async"  # "async": an ``async def`` tool; "sync": a plain ``def`` one


@dataclass(frozen=True, slots=True)
class _Timing:
    total: float
    first: float | None
    last: float | None


def _windows(stamps: list[float], window: int | None) -> tuple[float | None, float | None]:
    if window is None:
        return None, None
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.fmean(gaps[:window]), statistics.fmean(gaps[-window:])


async def _time_loopwise(steps: int, window: int | None, sync: bool = False) -> _Timing:
    model = StampedModel(script(steps))
    agent = _agent(model, steps, sync)
    gc.collect()
    started = time.perf_counter()
    await loopwise_run(agent, steps)
    total = time.perf_counter() - started
    return _Timing(total, *_windows(model.stamps, window))


async def _time_baseline(steps: int, window: int | None, sync: bool = False) -> _Timing:
    model = StampedModel(script(steps))
    gc.collect()
    started = time.perf_counter()
    await baseline_run(model, max_steps=steps, sync=sync)
    total = time.perf_counter() - started
    return _Timing(total, *_windows(model.stamps, window))


def _median_us(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) * 1e6 if present else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def measure_steps(n_steps: int, repeats: int = 5, *, sync: bool = False) -> StepsResult:
    """Time ``n_steps``-step runs of both loops, interleaved, after one warm-up of each.

    ``sync``: with the tool as a plain ``def`` instead of an ``async def``.
    """
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 (a tool call and an answer), not {n_steps}")
    window = min(20, (n_steps - 1) // 2) or None

    async def go() -> tuple[list[_Timing], list[_Timing]]:
        await _time_loopwise(n_steps, window, sync)
        await _time_baseline(n_steps, window, sync)
        lw: list[_Timing] = []
        bl: list[_Timing] = []
        for i in range(repeats):  # alternate which goes first, so drift hits both
            if i % 2:
                bl.append(await _time_baseline(n_steps, window, sync))
            lw.append(await _time_loopwise(n_steps, window, sync))
            if not i % 2:
                bl.append(await _time_baseline(n_steps, window, sync))
        return lw, bl

    lw, bl = asyncio.run(go())
    lw_step = statistics.median(t.total for t in lw) / n_steps * 1e6
    bl_step = statistics.median(t.total for t in bl) / n_steps * 1e6
    lw_first, lw_last = _median_us([t.first for t in lw]), _median_us([t.last for t in lw])
    bl_first, bl_last = _median_us([t.first for t in bl]), _median_us([t.last for t in bl])
    return StepsResult(
        steps=n_steps,
        repeats=repeats,
        loopwise_us_per_step=lw_step,
        baseline_us_per_step=bl_step,
        overhead_us_per_step=lw_step - bl_step,
        window=window,
        loopwise_first_us=lw_first,
        loopwise_last_us=lw_last,
        baseline_first_us=bl_first,
        baseline_last_us=bl_last,
        overhead_first_us=_minus(lw_first, bl_first),
        overhead_last_us=_minus(lw_last, bl_last),
        tool="sync" if sync else "async",
    )


# ---------------------------------------------------------------------------------------
# (b) concurrency


@dataclass(frozen=True, slots=True)
class ConcurrencyResult:
    """Wall time of ``runs`` concurrent runs in one event loop (medians, seconds)."""

    runs: int
    steps: int
    latency: float
    repeats: int
    ideal_s: float
    loopwise_s: float
    baseline_s: float
    loopwise_ratio: float
    baseline_ratio: float


async def _gather_loopwise(runs: int, steps: int, latency: float) -> float:
    agents = [_agent(ScriptedModel(script(steps), latency=latency), steps) for _ in range(runs)]
    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(loopwise_run(a, steps) for a in agents))
    return time.perf_counter() - started


async def _gather_baseline(runs: int, steps: int, latency: float) -> float:
    models = [ScriptedModel(script(steps), latency=latency) for _ in range(runs)]
    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(baseline_run(m, max_steps=steps) for m in models))
    return time.perf_counter() - started


def measure_concurrency(
    runs: int, steps: int, latency: float, repeats: int = 3
) -> ConcurrencyResult:
    """``runs`` runs of ``steps`` model calls at ``latency`` s each, all at once."""

    async def go() -> tuple[list[float], list[float]]:
        await _gather_loopwise(min(runs, 4), 2, 0.0)  # warm caches, not timed
        lw = [await _gather_loopwise(runs, steps, latency) for _ in range(repeats)]
        bl = [await _gather_baseline(runs, steps, latency) for _ in range(repeats)]
        return lw, bl

    lw, bl = asyncio.run(go())
    ideal = steps * latency
    lw_s, bl_s = statistics.median(lw), statistics.median(bl)
    return ConcurrencyResult(
        runs=runs,
        steps=steps,
        latency=latency,
        repeats=repeats,
        ideal_s=ideal,
        loopwise_s=lw_s,
        baseline_s=bl_s,
        loopwise_ratio=lw_s / ideal if ideal else float("nan"),
        baseline_ratio=bl_s / ideal if ideal else float("nan"),
    )


# ---------------------------------------------------------------------------------------
# (c) import time

IMPORTS: dict[str, str] = {
    "loopwise": "import loopwise",
    "agent_tool": "from loopwise import Agent, tool",
    "floor": "import pydantic; import asyncio",
    "floor_basemodel": "import asyncio; from pydantic import BaseModel",
}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Median import times in a fresh interpreter, in ms, with ``.pyc`` files cached (as
    an installed package has them)."""

    repeats: int
    loopwise_ms: float
    agent_tool_ms: float
    floor_ms: float
    floor_basemodel_ms: float


def _time_import(statement: str, env: dict[str, str]) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return float(done.stdout.strip().splitlines()[-1])


def measure_import(repeats: int = 5) -> ImportResult:
    """Each statement in its own fresh process, interleaved, after one unmeasured pass.

    Bytecode goes to a private cache folder (``PYTHONPYCACHEPREFIX``), so the figures do
    not depend on ``PYTHONDONTWRITEBYTECODE`` and nothing is written into the source tree.
    """
    times: dict[str, list[float]] = {key: [] for key in IMPORTS}
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-pyc-") as cache:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = cache
        for statement in IMPORTS.values():
            _time_import(statement, cached)
        for _ in range(repeats):
            for key, statement in IMPORTS.items():
                times[key].append(_time_import(statement, cached))
    ms = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    return ImportResult(
        repeats=repeats,
        loopwise_ms=ms["loopwise"],
        agent_tool_ms=ms["agent_tool"],
        floor_ms=ms["floor"],
        floor_basemodel_ms=ms["floor_basemodel"],
    )


# ---------------------------------------------------------------------------------------
# Profile


class ReplayModel:
    """Replies prebuilt in advance, so a profile shows the loop and not the model.

    (``ScriptedModel`` estimates usage over the whole history on every request, which is
    O(history) and dominates a long run's profile.)
    """

    provider = "test"
    model_name = "replay"
    context_window: int | None = None

    def __init__(self, steps: int):
        usage = Usage(requests=1, input_tokens=100, output_tokens=10)
        self._replies = [
            AssistantMessage(
                parts=(ToolCallPart(id=f"call_{i}", name="add", args={"a": i, "b": 1}),),
                usage=usage,
                model_name=self.model_name,
                finish_reason="tool_calls",
            )
            for i in range(steps - 1)
        ]
        self._replies.append(
            AssistantMessage(
                parts=(TextPart(text="The total is done."),),
                usage=usage,
                model_name=self.model_name,
                finish_reason="stop",
            )
        )
        self._next = 0

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        reply = self._replies[self._next]
        self._next += 1
        return reply


def profile_steps(n_steps: int, top: int = 25, *, sync: bool = False) -> str:
    """cProfile of one loopwise run of ``n_steps`` steps on a :class:`ReplayModel`."""

    async def go() -> None:
        await loopwise_run(_agent(ReplayModel(n_steps), n_steps, sync), n_steps)  # warm-up
        agent = _agent(ReplayModel(n_steps), n_steps, sync)
        profiler = cProfile.Profile()
        profiler.enable()
        await loopwise_run(agent, n_steps)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)

    out = io.StringIO()
    asyncio.run(go())
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True, slots=True)
class Report:
    steps: list[StepsResult]
    concurrency: ConcurrencyResult
    imports: ImportResult
    sync_steps: list[StepsResult] = field(default_factory=list)
    """The same per-step runs with a plain ``def`` tool (not part of the goals)."""

    def flat_ratio(self) -> float | None:
        """Late-window over early-window overhead per step in the longest run."""
        longest = max(self.steps, key=lambda s: s.steps)
        first, last = longest.overhead_first_us, longest.overhead_last_us
        if first is None or last is None or first <= 0:
            return None
        return last / first

    def goals(self) -> dict[str, bool]:
        longest = max(self.steps, key=lambda s: s.steps)
        flat = self.flat_ratio()
        return {
            "overhead_under_150us": longest.overhead_us_per_step < GOAL_STEP_US,
            "flat_in_history": flat is not None and flat <= GOAL_FLAT_RATIO,
            "concurrency_under_1.5x": self.concurrency.loopwise_ratio < GOAL_CONCURRENCY_RATIO,
            "import_under_150ms": self.imports.agent_tool_ms < GOAL_IMPORT_MS,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "steps": [asdict(s) for s in self.steps],
            "sync_steps": [asdict(s) for s in self.sync_steps],
            "concurrency": asdict(self.concurrency),
            "import": asdict(self.imports),
            "flat_ratio": self.flat_ratio(),
            "goals_met": self.goals(),
            "peers": {"note": PEERS_NOTE, **PEERS},
        }


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:8.1f}"


def _ok(met: bool) -> str:
    return "MET" if met else "MISSED"


def _table(results: list[StepsResult]) -> list[str]:
    lines = [f"  {'steps':>6} {'loopwise':>10} {'baseline':>10} {'overhead':>10}"]
    for s in results:
        lines.append(
            f"  {s.steps:>6} {s.loopwise_us_per_step:>10.1f} {s.baseline_us_per_step:>10.1f} "
            f"{s.overhead_us_per_step:>10.1f}"
        )
    return lines


def _sync_lines(report: Report) -> list[str]:
    if not report.sync_steps:
        return []
    return [
        "  with a plain `def` tool (loopwise: on a worker thread; baseline: called inline):",
        *_table(report.sync_steps),
    ]


def _steps_lines(report: Report) -> list[str]:
    lines = [
        "(a) Per step, µs (median of runs; overhead = loopwise - baseline), `async def` tool",
        *_table(report.steps),
    ]
    longest = max(report.steps, key=lambda s: s.steps)
    if longest.window is not None:
        w = longest.window
        lines += [
            f"  within the {longest.steps}-step run, µs per step (first {w} vs last {w} steps):",
            f"    loopwise {_us(longest.loopwise_first_us)} -> {_us(longest.loopwise_last_us)}",
            f"    baseline {_us(longest.baseline_first_us)} -> {_us(longest.baseline_last_us)}"
            "   (the scripted model's own cost grows with the history)",
            f"    overhead {_us(longest.overhead_first_us)} -> {_us(longest.overhead_last_us)}",
        ]
    return lines + _sync_lines(report)


def _concurrency_lines(c: ConcurrencyResult) -> list[str]:
    return [
        f"(b) Concurrency: {c.runs} runs x {c.steps} steps, {c.latency * 1e3:.0f} ms model "
        f"latency, one event loop; ideal {c.ideal_s:.3f} s",
        f"  loopwise {c.loopwise_s:.3f} s = {c.loopwise_ratio:.2f}x ideal",
        f"  baseline {c.baseline_s:.3f} s = {c.baseline_ratio:.2f}x ideal",
    ]


def _import_lines(i: ImportResult) -> list[str]:
    rows = [
        ("import loopwise", i.loopwise_ms, ""),
        ("from loopwise import Agent, tool", i.agent_tool_ms, ""),
        ("import pydantic; import asyncio", i.floor_ms, "floor (pydantic is lazy)"),
        (
            "import asyncio; from pydantic import BaseModel",
            i.floor_basemodel_ms,
            "floor once BaseModel loads",
        ),
    ]
    lines = [f"(c) Import, fresh process, median of {i.repeats}"]
    lines += [f"  {label:<48} {ms:7.1f} ms  {note}".rstrip() for label, ms, note in rows]
    return lines


def _goal_lines(report: Report) -> list[str]:
    longest = max(report.steps, key=lambda s: s.steps)
    goals = report.goals()
    flat = report.flat_ratio()
    flat_text = "n/a" if flat is None else f"{flat:.2f}x"
    return [
        "Goals",
        f"  overhead per step < {GOAL_STEP_US:.0f} µs at {longest.steps} steps: "
        f"{longest.overhead_us_per_step:.1f} µs  {_ok(goals['overhead_under_150us'])}",
        f"  flat in history (late/early overhead <= {GOAL_FLAT_RATIO}x): {flat_text}  "
        f"{_ok(goals['flat_in_history'])}",
        f"  concurrency < {GOAL_CONCURRENCY_RATIO}x ideal: "
        f"{report.concurrency.loopwise_ratio:.2f}x  {_ok(goals['concurrency_under_1.5x'])}",
        f"  import (Agent, tool) < {GOAL_IMPORT_MS:.0f} ms: {report.imports.agent_tool_ms:.1f} ms  "
        f"{_ok(goals['import_under_150ms'])}",
    ]


def _peer_lines() -> list[str]:
    lines = [
        f"Reference peers ({PEERS_NOTE})",
        f"  {'framework':<14} {'per step @200':>14} {'concurrency':>12} {'import':>12}",
    ]
    for name, row in PEERS.items():
        lines.append(
            f"  {name:<14} {row['per_step_200']:>14} {row['concurrency_ratio']:>12} "
            f"{row['import']:>12}"
        )
    return lines


def render(report: Report) -> str:
    header = (
        f"loopwise overhead benchmark — Python {platform.python_version()}, "
        f"{platform.machine()}, scripted model, trivial tool"
    )
    sections = [
        [header],
        _steps_lines(report),
        _concurrency_lines(report.concurrency),
        _import_lines(report.imports),
        _goal_lines(report),
        _peer_lines(),
    ]
    return "\n\n".join("\n".join(s) for s in sections)


def run_all(quick: bool) -> Report:
    sizes, repeats = ((10, 60), 3) if quick else ((10, 200), 5)
    steps = [measure_steps(n, repeats=repeats) for n in sizes]
    sync_steps = [measure_steps(n, repeats=repeats, sync=True) for n in sizes]
    if quick:
        concurrency = measure_concurrency(50, 5, 0.05, repeats=1)
        imports = measure_import(repeats=3)
    else:
        concurrency = measure_concurrency(200, 5, 0.05, repeats=3)
        imports = measure_import(repeats=5)
    return Report(steps, concurrency, imports, sync_steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true", help="also profile a long run")
    args = parser.parse_args(argv)
    report = run_all(args.quick)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render(report))
    if args.profile:
        print("\nProfile of one loopwise run (cProfile, after a warm-up)", file=sys.stderr)
        print(profile_steps(60 if args.quick else 200), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
