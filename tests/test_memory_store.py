"""The memory stores (SQLite + sqlite-vec, PostgreSQL) behind one interface: namespaces
isolate tenants, forget deletes everywhere, near-duplicates merge, prune, hybrid ranking.

These use the deterministic HashEmbedder (shared words → similar vectors); the semantic
tests with the real model are in test_memory_agent.py and test_memory_recall.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwise.errors import UsageError
from loopwise.memory import HashEmbedder, Memory, MemorySettings, Namespace
from memory_support import need_store_extra, pg_url

__all__ = ["pg_url"]

A = Namespace("support", "tenant-a")
B = Namespace("support", "tenant-b")


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


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_query_never_returns_another_namespaces_memories(memory: Memory) -> None:
    secret = "The wifi password of tenant A's office is hunter2-orange."
    run(memory.remember(secret, namespace=A))
    run(memory.remember("Tenant B's office wifi is open, no password.", namespace=B))
    run(
        memory.remember(
            "Wifi password for the support agent itself.", namespace=Namespace("support")
        )
    )
    for ns in (B, Namespace("support"), Namespace("sales", "tenant-a")):
        hits = run(memory.recall("wifi password office tenant A", namespace=ns, k=10, threshold=0))
        assert all(h.record.namespace == ns for h in hits)
        assert secret not in [h.record.text for h in hits]
    found = run(memory.recall("wifi password office", namespace=A, k=10, threshold=0))
    assert [h.record.text for h in found] == [secret]
    record = found[0].record
    assert run(memory.get(record.id, B)) is None  # by id, too
    assert not run(memory.forget(record.id, B))
    assert run(memory.get(record.id, A)) is not None


def test_forget_deletes_the_row_the_keywords_and_the_vector(memory: Memory) -> None:
    text = "The release train leaves every Tuesday at noon."
    record = run(memory.remember(text, namespace=A))
    assert run(memory.recall("release train Tuesday", namespace=A))
    assert run(memory.forget(record.id, A))
    assert run(memory.get(record.id)) is None
    assert run(memory.recall("release train Tuesday", namespace=A, threshold=0)) == []
    assert _vectors(memory) == 0  # nothing left in the vector index
    assert not run(memory.forget(record.id, A))


def _vectors(memory: Memory) -> int:
    store = memory.store
    if store.backend == "sqlite-vec":
        return int(store._conn.execute("SELECT count(*) FROM memories_vec").fetchone()[0])  # type: ignore[attr-defined]
    row = store._conn.execute("SELECT count(embedding) FROM loopwise_memories").fetchone()  # type: ignore[attr-defined]
    return int(row[0])


def test_a_near_duplicate_is_merged_not_stored_twice(memory: Memory) -> None:
    first = run(memory.remember("The build server is ci-3.example.com.", namespace=A, run_id="r1"))
    second = run(memory.remember("The build server is ci-3.example.com", namespace=A, run_id="r2"))
    assert second.id == first.id and second.merged == 1
    assert second.run_ids == ("r1", "r2")
    assert run(memory.count(A)) == 1
    other = run(memory.remember("The build server is ci-3.example.com.", namespace=B))
    assert other.id != first.id  # the same text in another namespace is its own memory
    assert run(memory.count(A)) == 1 and run(memory.count(B)) == 1


def test_untrusted_is_kept_through_a_merge(memory: Memory) -> None:
    tool = ("agent", "tool:fetch")
    run(memory.remember("Deploy window is Friday 18:00.", namespace=A, provenance=tool))
    merged = run(memory.remember("Deploy window is Friday 18:00", namespace=A, provenance=tool))
    assert merged.untrusted and merged.merged == 1 and merged.provenance == tool


def test_prune_by_age_and_by_count(memory: Memory) -> None:
    for i, word in enumerate(["alpha", "bravo", "charlie", "delta"]):
        run(memory.remember(f"Codename {word} means project number {i}.", namespace=A))
    run(memory.remember("Codename echo belongs to tenant B.", namespace=B))
    assert run(memory.prune(A, keep=2)) == 2
    texts = [r.text for r in run(memory.list(A))]
    assert texts == [
        "Codename delta means project number 3.",
        "Codename charlie means project number 2.",
    ]
    assert run(memory.prune(older_than=3600)) == 0
    time.sleep(0.05)
    assert run(memory.prune(older_than=0.01)) == 3
    assert run(memory.count()) == 0


def test_keyword_and_recency_change_the_order(memory: Memory) -> None:
    settings = MemorySettings(recency_weight=0.5, half_life_days=1)
    old = run(memory.remember("Invoice numbering restarts each fiscal year.", namespace=A))
    new = run(memory.remember("Invoice numbering uses the prefix INV.", namespace=A))
    memory.settings = settings
    # Age the first one by ten days, then the same query prefers the newer one.
    store = memory.store
    aged = type(old)(**{**_fields(old), "updated_at": old.updated_at - 10 * 86400})
    store.update(aged, None)
    hits = run(memory.recall("invoice numbering", namespace=A, threshold=0))
    assert [h.record.id for h in hits] == [new.id, old.id]
    assert hits[1].recency < 0.01 < hits[0].recency
    hits = run(memory.recall("fiscal year invoice", namespace=A, threshold=0))
    assert hits[0].record.id == old.id and hits[0].keyword == 1.0


def _fields(record: object) -> dict[str, object]:
    return {f: getattr(record, f) for f in record.__dataclass_fields__}  # type: ignore[attr-defined]


def test_the_threshold_drops_unrelated_memories(memory: Memory) -> None:
    run(memory.remember("The cafeteria serves soup on Wednesdays.", namespace=A))
    assert run(memory.recall("kubernetes upgrade procedure", namespace=A)) == []
    assert len(run(memory.recall("kubernetes upgrade procedure", namespace=A, threshold=0))) <= 1


def test_a_database_made_for_another_embedder_is_refused(tmp_path: Path) -> None:
    need_store_extra()
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    first = Memory(url, embedder=HashEmbedder(64))
    run(first.remember("something", namespace=A))
    first.close()
    with pytest.raises(UsageError, match="made with embedder hash:64"):
        run(Memory(url, embedder=HashEmbedder(128)).list())


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    need_store_extra()
    memory = Memory(f"sqlite:///{tmp_path / 'm.sqlite'}", embedder=HashEmbedder())
    with pytest.raises(UsageError, match="empty"):
        run(memory.remember("   ", namespace=A))
    with pytest.raises(UsageError, match="query is empty"):
        run(memory.recall(" ", namespace=A))
    with pytest.raises(UsageError, match="needs older_than"):
        run(memory.prune())
    with pytest.raises(UsageError, match="not supported"):
        Memory("mysql://x", embedder=HashEmbedder())
    with pytest.raises(UsageError, match="k must be at least 1"):
        run(memory.recall("x", namespace=A, k=0))
    with pytest.raises(UsageError, match="threshold"):
        MemorySettings(threshold=2)
