"""Long-term memory benchmark: embedding throughput, search latency at 10k and 100k
memories (sqlite-vec store and the full hybrid recall) against brute-force numpy over the
same vectors, PostgreSQL exact ranking when a server answers, and memory use.

    .venv/bin/python bench/memory.py              # 10k and 100k (about 2 minutes)
    .venv/bin/python bench/memory.py --quick      # 2k only, 128 texts embedded
    .venv/bin/python bench/memory.py --postgres postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loopwise.memory import HashEmbedder, LocalEmbedder, Memory, MemoryRecord, Namespace
from loopwise.memory.store import open_store

DIMS = 384
NS = Namespace("bench")
WORDS = (
    "deploy database backup invoice customer region server cache queue alert secret "
    "billing report search upload email release cluster budget ticket schedule meeting"
).split()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_embed(n: int, threads: int | None = None) -> dict[str, float]:
    embedder = LocalEmbedder()
    before = rss_mb()
    started = time.perf_counter()
    embedder.embed(["warm up"])
    load = time.perf_counter() - started
    if threads is not None:  # torch's thread count is per process: switch it between runs
        import torch

        torch.set_num_threads(threads)
        embedder.embed(["warm up"])
    texts = [
        f"Memory {i}: the {random.choice(WORDS)} of {random.choice(WORDS)} is "
        f"{random.choice(WORDS)} number {i}, handled by team {i % 17}."
        for i in range(n)
    ]
    started = time.perf_counter()
    embedder.embed(texts)
    batch = time.perf_counter() - started
    singles = []
    for t in texts[:20]:
        s = time.perf_counter()
        embedder.embed([t])
        singles.append(time.perf_counter() - s)
    return {
        "load_s": load,
        "texts_per_s": n / batch,
        "single_ms": statistics.median(singles) * 1000,
        "rss_model_mb": rss_mb() - before,
    }


def _records(n: int) -> tuple[list[MemoryRecord], Any]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((n, DIMS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = time.time()
    records = [
        MemoryRecord(
            id=f"mem_{i:08d}",
            namespace=NS,
            kind="fact",
            text=f"Fact {i} about {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}.",
            source="bench",
            untrusted=False,
            created_at=now - i,
            updated_at=now - i,
        )
        for i in range(n)
    ]
    return records, vectors


def bench_search(n: int, database: str, queries: int = 20) -> dict[str, float]:
    records, vectors = _records(n)
    store = open_store(database)
    store.open("bench", DIMS)
    started = time.perf_counter()
    for r, v in zip(records, vectors, strict=True):
        store.add(r, v.tolist())
    insert = time.perf_counter() - started
    rng = np.random.default_rng(11)
    qs = rng.standard_normal((queries, DIMS), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    knn, hybrid, brute = [], [], []
    memory = Memory(store=store, embedder=_Fixed(qs))
    memory._opened = True
    for i, q in enumerate(qs):
        s = time.perf_counter()
        found = store.search(NS, q.tolist(), [], 10)
        knn.append(time.perf_counter() - s)
        s = time.perf_counter()
        top = np.argpartition(-(vectors @ q), 10)[:10]
        brute.append(time.perf_counter() - s)
        if {c.record.id for c in found} != {records[j].id for j in top}:
            raise AssertionError(f"store and numpy disagree on the top 10 at {n}")
        memory.embedder = _Fixed(qs[i : i + 1])
        s = time.perf_counter()
        asyncio.run(memory.recall("deploy database backup", namespace=NS, k=5, threshold=0))
        hybrid.append(time.perf_counter() - s)
    store.close()
    return {
        "insert_s": insert,
        "knn_ms": statistics.median(knn) * 1000,
        "recall_ms": statistics.median(hybrid) * 1000,
        "numpy_ms": statistics.median(brute) * 1000,
    }


class _Fixed(HashEmbedder):
    """Returns given query vectors (so search cost is measured, not embedding)."""

    def __init__(self, vectors: Any):
        super().__init__(DIMS)
        self._vectors = vectors

    @property
    def name(self) -> str:
        return "bench"

    def embed(self, texts: Any) -> list[list[float]]:
        return [self._vectors[0].tolist() for _ in texts]


def _drop(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS loopwise_memories, loopwise_memory_settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", help="also measure PostgreSQL (exact ranking) at 10k")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to compare")
    args = parser.parse_args()
    sizes = [2_000] if args.quick else [10_000, 100_000]
    print(f"rss at start: {rss_mb():.0f} MB")
    for threads in map(int, args.threads.split(",")):
        e = bench_embed(128 if args.quick else 1024, threads)
        print(
            f"embed (all-MiniLM-L6-v2, CPU, {threads} thread(s)): load {e['load_s']:.2f} s, "
            f"{e['texts_per_s']:.0f} texts/s batched, {e['single_ms']:.1f} ms for one text, "
            f"model +{e['rss_model_mb']:.0f} MB resident"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"m{n}.sqlite"
            r = bench_search(n, f"sqlite:///{path}")
            size = sum(p.stat().st_size for p in Path(tmp).glob(f"m{n}.sqlite*")) / 2**20
            print(
                f"sqlite-vec {n:>7,} memories: insert {r['insert_s']:.1f} s, top-10 kNN "
                f"{r['knn_ms']:.1f} ms (numpy brute force {r['numpy_ms']:.1f} ms), hybrid "
                f"recall {r['recall_ms']:.1f} ms, file {size:.0f} MB, peak rss {rss_mb():.0f} MB"
            )
    if args.postgres:  # use a scratch database: the memory tables are dropped afterwards
        try:
            r = bench_search(10_000 if not args.quick else 2_000, args.postgres)
        finally:
            _drop(args.postgres)
        print(
            f"postgresql (exact, numpy) : top-10 {r['knn_ms']:.1f} ms, hybrid recall "
            f"{r['recall_ms']:.1f} ms (numpy alone {r['numpy_ms']:.1f} ms)"
        )


if __name__ == "__main__":
    main()
