"""The API benchmark still runs: tiny sizes, SQLite only, no timing assertions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "api.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_api", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_api_bench_measures_every_figure(bench: ModuleType, tmp_path: Path) -> None:
    figures = bench.measure(
        "sqlite",
        f"sqlite:///{tmp_path / 'bench.sqlite'}",
        runs=3,
        steps=3,
        samples=1,
        waiting=3,
        idle_seconds=0.2,
    )
    assert (figures.runs, figures.steps, figures.waiting) == (3, 3, 3)
    assert figures.seconds > 0 and figures.runs_per_second > 0
    assert all(v > 0 for v in (*figures.first_step_ms, *figures.approval_ms))
    assert figures.idle_cpu_percent >= 0 and figures.new_run_while_waiting_ms > 0
    text = bench.render([figures])
    for label in ("runs per second", "approval -> next step", "idle CPU"):
        assert label in text
    assert json.dumps(figures.runs_per_second)


def test_agents_take_the_scripted_number_of_steps(bench: ModuleType) -> None:
    agents = bench.make_agents(4)
    result = agents["work"].run_sync("go")
    assert result.status == "completed" and result.steps == 4 and result.tool_calls == 3
    paused = agents["gate"].run_sync("go")
    assert paused.status == "input_required"
