"""Hybrid ranking, the same for every store: vector similarity + keyword overlap, weighted
by recency. The threshold applies to relevance (vector + keyword), so a recent but
unrelated memory is never surfaced for being recent."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .records import Hit
from .store import Candidate

__all__ = ["MemorySettings", "keyword_score", "rank", "terms_of"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i
    in into is it its me my no not of on or our so than that the their them then there these
    they this to was we were what when where which who why will with would you your about
    after before did done find get give make need please show tell use using""".split()
)


@dataclass(frozen=True, slots=True)
class MemorySettings:
    """How many memories a run gets and how they are chosen.

    ``k``: at most this many memories at the start of a run. ``threshold``: the least
    relevance (0-1) a memory needs. ``keyword_weight``: the share of keyword overlap in
    relevance (the rest is cosine similarity). ``recency_weight`` and
    ``half_life_days``: how much age lowers the score. ``duplicate_similarity``: a new
    memory this close (cosine) to one of its namespace is merged into it. ``candidates``:
    how many the store returns per search before ranking.
    """

    k: int = 5
    threshold: float = 0.35
    keyword_weight: float = 0.25
    recency_weight: float = 0.2
    half_life_days: float = 30.0
    duplicate_similarity: float = 0.92
    candidates: int = 50

    def __post_init__(self) -> None:
        checks = (
            ("k", self.k >= 1),
            ("threshold", 0.0 <= self.threshold <= 1.0),
            ("keyword_weight", 0.0 <= self.keyword_weight <= 1.0),
            ("recency_weight", 0.0 <= self.recency_weight <= 1.0),
            ("half_life_days", self.half_life_days > 0),
            ("duplicate_similarity", 0.0 < self.duplicate_similarity <= 1.0),
            ("candidates", self.candidates >= self.k),
        )
        for name, ok in checks:
            if not ok:
                raise UsageError(
                    f"MemorySettings.{name}={getattr(self, name)!r} is out of range; "
                    "k ≥ 1, weights and threshold in [0, 1], candidates ≥ k."
                )


def _stem(word: str) -> str:
    return word[:6] if len(word) > 6 else word


def terms_of(text: str, *, limit: int = 24) -> list[str]:
    """The query's distinct content words, stemmed (a crude prefix), in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in _STOP:
            seen.setdefault(_stem(word), None)
            if len(seen) >= limit:
                break
    return list(seen)


def keyword_score(terms: Sequence[str], text: str) -> float:
    """The share of query terms found in ``text`` (by stem)."""
    if not terms:
        return 0.0
    words = {_stem(w) for w in _WORD.findall(text.lower())}
    return sum(1 for t in terms if t in words) / len(terms)


def rank(
    candidates: Sequence[Candidate],
    terms: Sequence[str],
    settings: MemorySettings,
    *,
    k: int,
    threshold: float,
    now: float | None = None,
) -> list[Hit]:
    """The best ``k`` candidates whose relevance reaches ``threshold``, best first."""
    now = time.time() if now is None else now
    hits: list[Hit] = []
    for c in candidates:
        text = c.record.text if not c.record.task else f"{c.record.task}\n{c.record.text}"
        kw = keyword_score(terms, text)
        # NaN (a zero vector's cosine) counts as unrelated, not as min()'s 1.0
        vector = max(0.0, min(1.0, c.cosine)) if c.cosine == c.cosine else 0.0
        relevance = (1 - settings.keyword_weight) * vector + settings.keyword_weight * kw
        if relevance < threshold:
            continue
        age_days = max(0.0, now - c.record.updated_at) / 86400
        recency = 0.5 ** (age_days / settings.half_life_days)
        score = relevance * (1 - settings.recency_weight + settings.recency_weight * recency)
        hits.append(Hit(c.record, score, relevance, vector, kw, recency))
    hits.sort(key=lambda h: (-h.score, h.record.id))
    return hits[:k]
