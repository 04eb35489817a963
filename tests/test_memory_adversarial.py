"""Hostile and odd input to long-term memory: NUL and broken unicode, queries without
words, out-of-range numbers, and two processes writing and searching one SQLite file."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from loopwise.errors import UsageError
from loopwise.memory import HashEmbedder, Memory, Namespace
from memory_support import need_store_extra, pg_url

__all__ = ["pg_url"]

T = TypeVar("T")
NS = Namespace("support", "tenant-a")


@pytest.fixture(params=["sqlite", "postgresql"])
def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    need_store_extra()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    mem = Memory(url, embedder=HashEmbedder(), summarize="deterministic")
    yield mem
    mem.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_nul_and_lone_surrogates_are_stored_not_crashed_on(memory: Memory) -> None:
    # PostgreSQL refuses NUL in text; a JSON "\ud800" is a str that UTF-8 cannot encode.
    fact = run(memory.remember("the vpn\x00 key is blue \ud800", namespace=NS))
    run_memory = run(
        memory.remember("deploy done", namespace=NS, kind="run", run_id="r1", task="ship\x00it")
    )
    assert "\x00" not in fact.text and "blue" in fact.text
    assert run_memory.task == "ship\ufffdit"
    hits = run(memory.recall("vpn key\x00 \ud800", namespace=NS, threshold=0.0))
    assert [h.record.id for h in hits][:1] == [fact.id]
    assert run(memory.get("mem_\x00")) is None
    assert run(memory.forget("mem_\x00")) is False


@pytest.mark.parametrize("query", ['"', "*", "-", ":", "🍕", "é", "NEAR(", "AND"])
def test_queries_without_words_find_nothing_or_something_but_never_crash(
    memory: Memory, query: str
) -> None:
    run(memory.remember("🍕", namespace=NS))  # a text without words: a zero vector here
    run(memory.remember("pizza on fridays", namespace=NS))
    hits = run(memory.recall(query, namespace=NS, threshold=0.0))
    # a zero vector's cosine is unknown (NaN), never a perfect match
    assert all(h.vector == 0.0 for h in hits if h.record.text == "🍕")
    assert all(not math.isnan(h.score) for h in hits)


def test_k_above_the_vector_index_limit_is_served(memory: Memory) -> None:
    run(memory.remember("pizza on fridays", namespace=NS))
    assert len(run(memory.recall("pizza", namespace=NS, k=100_000, threshold=0.0))) == 1


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan])
def test_threshold_outside_zero_to_one_is_a_usage_error(memory: Memory, threshold: float) -> None:
    run(memory.remember("pizza on fridays", namespace=NS))
    with pytest.raises(UsageError, match="threshold must be between 0 and 1"):
        run(memory.recall("pizza", namespace=NS, threshold=threshold))


def test_prune_with_nan_or_huge_numbers_deletes_nothing(memory: Memory) -> None:
    run(memory.remember("pizza on fridays", namespace=NS))
    # PostgreSQL sorts NaN above every time: "older than NaN" used to delete everything.
    for bad in ({"older_than": math.nan}, {"older_than": math.inf}, {"keep": 2**64}):
        with pytest.raises(UsageError, match="finite and not negative"):
            run(memory.prune(NS, **bad))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="offset"):
        run(memory.list(NS, offset=2**64))
    assert run(memory.count(NS)) == 1


_WORKER = """
import asyncio, random, sys, time
from loopwise.memory import HashEmbedder, Memory, Namespace
role, url, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
mem = Memory(url, embedder=HashEmbedder(), summarize="deterministic")
ns = Namespace("a")
async def main() -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if role == "writer":
            record = await mem.remember(f"pizza fact {random.random()} cheese", namespace=ns)
            await mem.forget(record.id)
        else:
            await mem.recall("pizza cheese fact", namespace=ns, threshold=0.0)
asyncio.run(main())
"""


def test_two_processes_write_forget_and_search_one_sqlite_file(tmp_path: Path) -> None:
    # Used to fail with BusyError (a read transaction upgraded to a write while the other
    # process wrote) and TypeError (a row deleted between the keyword and vector queries).
    need_store_extra()
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    roles = ["writer", "writer", "reader", "reader"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, role, url, "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    results = [p.communicate(timeout=120) for p in procs]
    failures = [err for p, (_, err) in zip(procs, results, strict=True) if p.returncode]
    assert failures == []


_SAME_FACT = """
import asyncio, sys
from loopwise.memory import HashEmbedder, Memory, Namespace
url, start = sys.argv[1], float(sys.argv[2])
mem = Memory(url, embedder=HashEmbedder(), summarize="deterministic")
async def main() -> None:
    import time
    time.sleep(max(0.0, start - time.time()))  # all processes start storing together
    for i in range(5):
        await mem.remember(f"The on-call phone number is 555-{i:04d}.", namespace=Namespace("a"))
asyncio.run(main())
mem.close()
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_storing_the_same_facts_at_once_merge_them(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import time

    need_store_extra()
    url = (
        f"sqlite:///{tmp_path / 'memory.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    Memory(url, embedder=HashEmbedder()).close()  # create the schema once
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen([sys.executable, "-c", _SAME_FACT, url, start], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    memory = Memory(url, embedder=HashEmbedder())
    try:
        stored = run(memory.list(Namespace("a"), limit=100))
    finally:
        memory.close()
    # 4 processes x 5 facts, each fact stored once (merged 3 times), never twice.
    assert sorted(r.text for r in stored) == [
        f"The on-call phone number is 555-{i:04d}." for i in range(5)
    ]
