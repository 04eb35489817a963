"""``loopwise memory list|search|show|add|forget|prune``: the memory database from a shell.

They open the memory database directly (``--database``, else ``LOOPWISE_MEMORY_DATABASE``,
else ``<data dir>/memory.sqlite``) with the embedder it was made with (``--embedder``,
else ``LOOPWISE_MEMORY_EMBEDDER``, else ``local``). Exit codes: 0 done, 1 not found,
2 usage error (one line on stderr). Memory text is printed with control characters
escaped.

Each command is a new process, so the ``local`` embedder (sentence-transformers and torch)
loads every time: most of a single search's seconds. ``memory search -`` reads one query
per line from stdin and answers each with the embedder loaded once; a running
``loopwise serve`` keeps it loaded for its memory API.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from ..errors import UsageError
from .display import json_safe, printable
from .runs import parse_age

if TYPE_CHECKING:
    from ..memory import Memory

__all__ = ["memory_app"]

T = TypeVar("T")
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

memory_app = typer.Typer(
    name="memory",
    help="Long-term memory: list, search, show, forget, prune.",
    no_args_is_help=True,
)

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        envvar="LOOPWISE_MEMORY_DATABASE",
        help="sqlite:///path or postgresql://... (default: the data directory's memory.sqlite).",
        show_default=False,
    ),
]
EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        envvar="LOOPWISE_MEMORY_EMBEDDER",
        help="local (default), hash:256 or openai:<model>:<dims>: the database's embedder.",
        show_default=False,
    ),
]
AgentOption = Annotated[str | None, typer.Option("--agent", help="The agent's namespace.")]
KeyOption = Annotated[str, typer.Option("--key", help="The user or tenant key in it.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.", metavar="")]


def _echo(text: str) -> None:
    typer.echo(printable(text))


def _json(data: Any, indent: int | None = None) -> None:
    typer.echo(json_safe(json.dumps(data, indent=indent, ensure_ascii=False)))


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(printable(" ".join(f"error: {message}".split())), err=True)
    raise typer.Exit(code)


def _with_memory(
    database: str | None, embedder: str | None, work: Callable[[Memory], Coroutine[Any, Any, T]]
) -> T:
    from ..memory import Memory
    from ..memory.embed import embedder_from_spec

    try:
        memory = Memory(database, embedder=embedder_from_spec(embedder))
        try:
            return asyncio.run(work(memory))
        finally:
            memory.close()
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


def _namespace(agent: str | None, key: str, *, required: bool) -> Any:
    from ..memory import Namespace

    if agent is None:
        if required:
            _fail("--agent is needed: memories are searched within one agent's namespace.", 2)
        if key:
            _fail("--key needs --agent: a key is a user or tenant of one agent.", 2)
        return None
    try:
        return Namespace(agent, key)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


def _line(data: dict[str, Any], extra: str = "") -> str:
    ns = data["namespace"]
    scope = ns["agent"] + (f"[{ns['key']}]" if ns["key"] else "")
    flag = " untrusted" if data["untrusted"] else ""
    text = " ".join(data["text"].split())
    text = text if len(text) <= 100 else text[:99] + "…"
    return f"{data['id']}  {scope}  {data['kind']}{flag}{extra}  {text}"


@memory_app.command("list")
def list_memories(
    agent: AgentOption = None,
    key: KeyOption = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many.")] = 20,
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
    json_output: JsonOption = False,
) -> None:
    """Memories, newest first (one namespace with --agent/--key, else all)."""
    namespace = _namespace(agent, key, required=False)
    records = _with_memory(database, embedder, lambda m: m.list(namespace, limit=limit))
    if json_output:
        _json([r.to_dict() for r in records])
        return
    for r in records:
        _echo(_line(r.to_dict()))
    if not records:
        typer.echo("no memories", err=True)


@memory_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    agent: AgentOption = None,
    key: KeyOption = "",
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many at most.")] = 5,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Least relevance (0-1).")
    ] = None,
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
    json_output: JsonOption = False,
) -> None:
    """The memories of one namespace most relevant to QUERY (hybrid ranking); QUERY - reads
    one query a line from stdin, loading the embedder once for all."""
    namespace = _namespace(agent, key, required=True)
    queries = [q for q in sys.stdin.read().splitlines() if q.strip()] if query == "-" else [query]

    async def recall_all(m: Memory) -> list[list[Any]]:
        return [await m.recall(q, namespace=namespace, k=k, threshold=threshold) for q in queries]

    answers = _with_memory(database, embedder, recall_all)
    for q, hits in zip(queries, answers, strict=True):
        if query == "-" and not json_output:
            _echo(f"# {q}")
        if json_output:
            _json([h.to_dict() for h in hits])
            continue
        for h in hits:
            _echo(_line(h.record.to_dict(), f"  score={h.score:.3f}"))
        if not hits:
            typer.echo("no relevant memories", err=True)


@memory_app.command("show")
def show(
    memory_id: Annotated[str, typer.Argument(help="The memory's id.")],
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """One memory with its provenance, as JSON."""
    record = _with_memory(database, embedder, lambda m: m.get(memory_id))
    if record is None:
        _fail(f"no memory has the id {memory_id!r}", EXIT_NOT_FOUND)
    _json(record.to_dict(), indent=2)


@memory_app.command("add")
def add(
    text: Annotated[str, typer.Argument(help="What to remember; - reads it from stdin.")],
    agent: Annotated[
        str, typer.Option("--agent", help="The agent's namespace (CLI runs: default).")
    ] = "default",
    key: KeyOption = "",
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """Store a memory you give (trusted: its provenance is the user)."""
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        _fail("the memory is empty.", EXIT_USAGE)
    namespace = _namespace(agent, key, required=True)
    record = _with_memory(
        database,
        embedder,
        lambda m: m.remember(text, namespace=namespace, source="user"),
    )
    _echo(f"remembered {record.id}")


@memory_app.command("forget")
def forget(
    memory_id: Annotated[str, typer.Argument(help="The memory's id.")],
    agent: AgentOption = None,
    key: KeyOption = "",
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """Delete a memory: its row, keyword entry and vector."""
    namespace = _namespace(agent, key, required=False)
    gone = _with_memory(database, embedder, lambda m: m.forget(memory_id, namespace))
    if not gone:
        _fail(f"no memory has the id {memory_id!r}" + (" here" if namespace else ""), 1)
    _echo(f"forgot {memory_id}")


@memory_app.command("prune")
def prune(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Delete memories not updated for: 90d.")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(min=0, help="Keep only this many newest per namespace.")
    ] = None,
    agent: AgentOption = None,
    key: KeyOption = "",
    database: DatabaseOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """Delete old memories (--older-than) and/or all but the newest (--keep)."""
    if older_than is None and keep is None:
        _fail("give --older-than (e.g. 90d) or --keep (a count), or both.", EXIT_USAGE)
    try:
        seconds = None if older_than is None else parse_age(older_than)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    namespace = _namespace(agent, key, required=False)
    count = _with_memory(
        database, embedder, lambda m: m.prune(namespace, older_than=seconds, keep=keep)
    )
    typer.echo(f"deleted {count} memor{'y' if count == 1 else 'ies'}")
