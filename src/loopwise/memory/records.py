"""Memory records, their namespace and provenance, and search hits."""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

from ..errors import UsageError
from .defuse import skeleton, strip_invisible
from .provenance import clean_provenance, is_untrusted

__all__ = [
    "Hit",
    "MemoryKind",
    "MemoryRecord",
    "Namespace",
    "looks_like_instructions",
    "new_memory_id",
]

MemoryKind: TypeAlias = Literal["run", "fact"]
MAX_TEXT_CHARS = 4000
MAX_NAME_CHARS = 200

# Phrases that try to steer a model. Only an extra signal that adds distrust to what the
# agent writes: trust comes from provenance (see provenance.py), never from wording, and
# a check like this one is bypassed by rewording (measured in tests/test_attack_memory.py).
_LATIN = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|prompts?|rules|"
    r"directions|guidelines|polic(y|ies)|directives?)\b"
    r"|\b(new|updated|revised|current) (system |security )?(instructions?|polic(y|ies)|rules|"
    r"guidelines|directives?)\s*:|\byou are now\b|\bsystem prompt\b"
    r"|\bdeveloper mode\b|\bdo not (tell|inform) the user\b"
    r"|\"role\"\s*:\s*\"(system|developer)\""
    r"|<\|?/?(system|instructions?|im_start|start_header_id|start_of_turn|inst)\b"
    r"|\[/?inst\]|<<sys>>",
)
_OTHER_SCRIPTS = re.compile(
    r"игнорир\w* .{0,30}инструкц|忽略.{0,10}(指令|指示|说明|提示)|無視|指示を無視|무시"
    r"|instrucciones anteriores|instructions précédentes|vorherigen anweisungen"
    r"|istruzioni precedenti|instruções anteriores"
)


def looks_like_instructions(text: str) -> bool:
    """True when ``text`` reads like prompt injection, after folding look-alike letters,
    invisible characters and accents. Adds distrust to agent-written text; never trust."""
    folded = skeleton(text)
    if _LATIN.search(folded) or _OTHER_SCRIPTS.search(folded):
        return True
    plain = unicodedata.normalize("NFKC", strip_invisible(text)[0]).casefold()
    return _OTHER_SCRIPTS.search(plain) is not None


def new_memory_id() -> str:
    return f"mem_{secrets.token_hex(10)}"


@dataclass(frozen=True, slots=True)
class Namespace:
    """Whose memories these are: an agent, optionally one user or tenant of it.

    Queries never cross namespaces; ``key=""`` is the agent's shared namespace.
    """

    agent: str
    key: str = ""

    def __post_init__(self) -> None:
        for label, value in (("agent", self.agent), ("key", self.key)):
            if not isinstance(value, str) or len(value) > MAX_NAME_CHARS or "\x00" in value:
                raise UsageError(
                    f"The memory namespace's {label} {value!r} must be a string of at most "
                    f"{MAX_NAME_CHARS} characters without NUL."
                )
        if not self.agent:
            raise UsageError("The memory namespace needs an agent name; it is empty.")

    @property
    def id(self) -> str:
        """The stored form: unambiguous for any agent and key (a JSON pair)."""
        return json.dumps([self.agent, self.key], ensure_ascii=False)

    @classmethod
    def from_id(cls, value: str) -> Namespace:
        agent, key = json.loads(value)
        return cls(str(agent), str(key))

    def __str__(self) -> str:
        return self.agent if not self.key else f"{self.agent} (key {self.key!r})"


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory: its text and where it came from.

    ``provenance`` lists the source kinds the text may derive from, writer first (``user``,
    ``agent``, ``tool:<name>``, ``recalled``, ...: see :mod:`loopwise.memory.provenance`);
    ``untrusted`` is derived from it alone. ``source`` says how it was written (``model``
    or ``deterministic`` summary, ``agent`` via the remember tool, ``user`` through the API
    or code). ``run_ids`` lists every run merged into this record.
    """

    id: str
    namespace: Namespace
    kind: MemoryKind
    text: str
    source: str
    created_at: float
    updated_at: float
    run_id: str | None = None
    task: str | None = None
    status: str | None = None
    run_ids: tuple[str, ...] = ()
    merged: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    provenance: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", clean_provenance(self.provenance))
        if not self.text.strip():
            raise UsageError("A memory's text is empty; give it something to remember.")
        if len(self.text) > MAX_TEXT_CHARS:
            raise UsageError(
                f"A memory's text has {len(self.text)} characters; the limit is "
                f"{MAX_TEXT_CHARS}. Summarise it first."
            )

    @property
    def untrusted(self) -> bool:
        """True unless every provenance entry is a trusted writer (``user``, ``agent``)."""
        return is_untrusted(self.provenance)

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.updated_at)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the CLI and the API print)."""
        data = asdict(self)
        data["namespace"] = {"agent": self.namespace.agent, "key": self.namespace.key}
        data["run_ids"] = list(self.run_ids)
        data["provenance"] = list(self.provenance)
        data["untrusted"] = self.untrusted
        return data


@dataclass(frozen=True, slots=True)
class Hit:
    """A memory found by a search, with the parts of its score."""

    record: MemoryRecord
    score: float
    relevance: float
    vector: float
    keyword: float
    recency: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory": self.record.to_dict(),
            "score": round(self.score, 4),
            "relevance": round(self.relevance, 4),
            "vector": round(self.vector, 4),
            "keyword": round(self.keyword, 4),
            "recency": round(self.recency, 4),
        }


def humanize_age(seconds: float) -> str:
    """``42 seconds``, ``3 hours``, ``2 days``: how old a memory is, for the model."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds)
    return f"{n} second{'s' if n != 1 else ''}"
