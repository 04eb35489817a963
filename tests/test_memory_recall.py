"""Retrieval quality with the shipped model: 50 labelled memories, 20 paraphrased queries;
recall@5 must reach 0.9 (printed in the figures), and hybrid ranking must not be worse
than vector similarity alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from figures import figure
from loopwise.memory import LocalEmbedder, Memory, MemorySettings, Namespace
from memory_dataset import MEMORIES, QUERIES
from memory_support import need_embeddings

NS = Namespace("handbook")


def _recall_at_5(memory: Memory, ids: dict[str, str]) -> float:
    total = 0.0
    for query, relevant in QUERIES:
        hits = asyncio.run(memory.recall(query, namespace=NS, k=5, threshold=0.0))
        found = {ids[h.record.id] for h in hits}
        total += len(found & relevant) / len(relevant)
    return total / len(QUERIES)


def test_recall_at_5_on_a_labelled_set(tmp_path: Path) -> None:
    need_embeddings()
    memory = Memory(
        f"sqlite:///{tmp_path / 'memory.sqlite'}",
        embedder=LocalEmbedder(),
        settings=MemorySettings(duplicate_similarity=0.99),
    )
    ids: dict[str, str] = {}
    started = time.perf_counter()
    for label, text in MEMORIES.items():
        ids[asyncio.run(memory.remember(text, namespace=NS)).id] = label
    stored = time.perf_counter() - started
    assert len(ids) == len(MEMORIES) == 50  # no two were merged

    hybrid = _recall_at_5(memory, ids)
    memory.settings = MemorySettings(keyword_weight=0.0, recency_weight=0.0)
    vector_only = _recall_at_5(memory, ids)
    figure(
        f"memory recall@5 (all-MiniLM-L6-v2, 50 memories, 20 queries): hybrid {hybrid:.2f}, "
        f"vector only {vector_only:.2f}; stored 50 in {stored:.2f} s"
    )
    assert hybrid >= 0.9
    assert hybrid >= vector_only - 0.05
    memory.close()
