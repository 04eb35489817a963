"""The overhead benchmark still runs: tiny sizes, sane structures, no timing assertions."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "overhead.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_overhead", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_baseline_loop_answers_after_the_scripted_calls(bench: ModuleType) -> None:
    model = bench.StampedModel(bench.script(4))
    answer = asyncio.run(bench.baseline_run(model, max_steps=4))
    assert answer == "The total is done."
    assert len(model.requests) == 4
    assert len(model.stamps) == 4


def test_measure_steps_reports_both_loops_and_windows(bench: ModuleType) -> None:
    result = bench.measure_steps(5, repeats=1)
    assert result.steps == 5
    assert result.window == 2
    assert result.loopwise_us_per_step > 0
    assert result.baseline_us_per_step > 0
    assert math.isclose(
        result.overhead_us_per_step, result.loopwise_us_per_step - result.baseline_us_per_step
    )
    for name in ("loopwise_first_us", "loopwise_last_us", "baseline_first_us"):
        assert getattr(result, name) > 0


def test_measure_steps_without_room_for_windows(bench: ModuleType) -> None:
    result = bench.measure_steps(2, repeats=1)
    assert result.window is None
    assert result.overhead_first_us is None and result.overhead_last_us is None
    with pytest.raises(ValueError, match="at least 2"):
        bench.measure_steps(1, repeats=1)


def test_measure_concurrency(bench: ModuleType) -> None:
    result = bench.measure_concurrency(3, 2, 0.001, repeats=1)
    assert (result.runs, result.steps) == (3, 2)
    assert math.isclose(result.ideal_s, 0.002)
    assert result.loopwise_s >= result.ideal_s and result.baseline_s >= result.ideal_s
    assert math.isclose(result.loopwise_ratio, result.loopwise_s / result.ideal_s)


def test_measure_import(bench: ModuleType) -> None:
    result = bench.measure_import(repeats=1)
    for value in (result.loopwise_ms, result.agent_tool_ms, result.floor_ms):
        assert 0 < value < 60_000


def test_report_renders_as_text_and_json(bench: ModuleType) -> None:
    report = bench.Report(
        steps=[bench.measure_steps(3, repeats=1), bench.measure_steps(5, repeats=1)],
        concurrency=bench.measure_concurrency(2, 2, 0.001, repeats=1),
        imports=bench.ImportResult(
            repeats=1, loopwise_ms=1.0, agent_tool_ms=1.0, floor_ms=1.0, floor_basemodel_ms=1.0
        ),
    )
    text = bench.render(report)
    for heading in ("(a) Per step", "(b) Concurrency", "(c) Import", "Goals", "not in this run"):
        assert heading in text
    data = json.loads(json.dumps(report.to_json()))
    assert [s["steps"] for s in data["steps"]] == [3, 5]
    assert set(data["goals_met"]) == {
        "overhead_under_150us",
        "flat_in_history",
        "concurrency_under_1.5x",
        "import_under_150ms",
    }
    assert "smolagents" in data["peers"]


def test_profile_names_the_loop(bench: ModuleType) -> None:
    text = bench.profile_steps(3, top=5)
    assert "function calls" in text


def test_sandbox_bench_runs_both_sides() -> None:
    import os

    from loopwise.sandbox import BubblewrapSandbox, SandboxUnavailable

    try:
        BubblewrapSandbox().check()
    except SandboxUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    path = BENCH.parent / "sandbox.py"
    spec = importlib.util.spec_from_file_location("bench_sandbox", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    figures = asyncio.run(module.main_async(2))
    assert [f.command for f in figures] == ["true", "python"]
    assert all(f.baseline_ms > 0 and f.sandbox_ms > 0 for f in figures)
    assert "bubblewrap" in module.render(figures)
