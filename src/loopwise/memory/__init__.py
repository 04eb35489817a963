"""Long-term memory: what earlier runs learned, surfaced at the start of new ones.

``Agent(..., memory=Memory())`` recalls the top-k relevant memories of the run's namespace
(its agent, plus the ``memory_key`` run-metadata entry for a user or tenant) into the first
user message as quoted reference data, and stores a summary of each finished run.
``Memory.tools()`` gives agents ``remember``/``recall``. Embeddings run locally
(sentence-transformers, all-MiniLM-L6-v2) unless another :class:`Embedder` is given;
vectors live in SQLite (sqlite-vec) or PostgreSQL (pgvector when present). Needs
``pip install 'loopwise[memory]'``; nothing heavy is imported until first use.
"""

from __future__ import annotations

from .embed import DEFAULT_MODEL, Embedder, HashEmbedder, LocalEmbedder, OpenAIEmbedder
from .memory import KEY_METADATA, Memory
from .rank import MemorySettings
from .records import Hit, MemoryRecord, Namespace
from .render import render_memories
from .store import Candidate, MemoryStore, open_store

__all__ = [
    "DEFAULT_MODEL",
    "KEY_METADATA",
    "Candidate",
    "Embedder",
    "HashEmbedder",
    "Hit",
    "LocalEmbedder",
    "Memory",
    "MemoryRecord",
    "MemorySettings",
    "MemoryStore",
    "Namespace",
    "OpenAIEmbedder",
    "open_store",
    "render_memories",
]
