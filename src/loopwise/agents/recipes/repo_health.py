"""Recipe ``repo-health``: commits per author in the last N days, the most recently
changed files, and the TODO/FIXME notes in the repository's comments, as a Markdown report.

The model investigates with the read-only ``git`` toolkit (``git_grep`` searches only the
tracked files, so dependencies, build output and ignored files are left out) and writes the
summary; the report's facts come from those tools' real output (the recipe makes any of
the three calls the model did not make itself). A match counts as a note only when its
marker stands in a comment (see ``comments``): not in a string, a docstring or prose.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...approval import ApprovalCallback
from ...errors import ModelRetry, UsageError
from ...events import Event
from ...limits import Budget
from ...models import Model
from ...toolkits import git
from ...toolkits._gitview import read_worktree_file
from .base import (
    Need,
    Recipe,
    RecipeResult,
    ReportNotWritten,
    bullets,
    check_out,
    facts_json,
    report,
    table,
    write_report,
)
from .comments import comment_lines

__all__ = ["repo_health"]

SYSTEM = """\
You check the health of a git repository with read-only tools. Call the tools you are \
asked to call, with exactly the arguments given, then answer with a two-sentence summary."""

_SHORTLOG = re.compile(r"^\s*(\d+)\t(.*?)(?: <([^>]*)>)?\s*$")
_STAT = re.compile(r"^ (\S.*?)\s+\|\s+(?:\d+|Bin)")
_GREP = re.compile(r"^(.+?):(\d+):\s?(.*)$")
MAX_SCANNED = 1 << 20  # bytes of one file read to tell its comments from its strings
MAX_SCANNED_TOTAL = 16 << 20  # ... and of all the files with a match together


async def repo_health(
    repo: str | Path,
    *,
    model: str | Model | None = None,
    days: int = 30,
    out: str | Path = "repo-health.md",
    workspace: str | Path | None = None,
    approve: ApprovalCallback | None = None,
    budget: Budget | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int = 12,
) -> RecipeResult:
    """Check ``repo`` and write the report to ``out`` (see the module docstring).

    ``budget`` is shared by the model's runs; ``approve`` decides overwriting ``out`` and
    writing outside ``workspace``; ``on_event`` sees every event of the runs."""
    if days < 1:
        raise UsageError(f"days must be 1 or more, not {days}.")
    check_out(out)
    # git reads "N days ago" before 1970 as nonsense (no commits): all history is enough.
    span = min(days, int(time.time() // 86_400) - 1)
    root = Path(repo)
    if not await asyncio.to_thread(root.is_dir):
        raise UsageError(f"Repository {str(repo)!r} does not exist or is not a directory.")
    if not (root / ".git").exists():
        raise UsageError(f"{str(repo)!r} is not a git repository (no .git found).")
    tools = git(root)
    needs = [
        Need("git_shortlog", {"since": f"{span} days ago"}),
        Need("git_log", {"max_count": 30, "oneline": True, "stat": True}),
        Need("git_grep", {"pattern": "TODO|FIXME"}),
    ]
    task = (
        f'Check the health of the repository. Call git_shortlog with since="{span} days ago"; '
        "call git_log with max_count=30, oneline=true, stat=true; call git_grep with "
        'pattern="TODO|FIXME". Then summarise what you found in two sentences.'
    )
    recipe = Recipe(
        "repo-health", model, budget=budget, approve=approve, on_event=on_event, max_steps=max_steps
    )
    shortlog, log, grep = await recipe.gather(tools, SYSTEM, task, needs)
    todos, left_out = await asyncio.to_thread(in_comments, root, parse_todos(grep))
    facts: dict[str, Any] = {
        "days": days,
        "commits_by_author": parse_shortlog(shortlog),
        "recent_files": parse_recent_files(log)[:15],
        "todos": todos[:50],
        "todo_matches_left_out": left_out,
    }
    if left_out:
        were = "match was" if left_out == 1 else "matches were"
        recipe.notes.append(
            f"{left_out} TODO/FIXME {were} left out: not in a comment (a string, a docstring, "
            "prose, a file whose comment syntax is not known, or one too large to read)."
        )
    summary, steps = await recipe.summarise(
        _facts_text(facts), _fallback(facts), grounding=facts_json(facts)
    )
    steps = steps or _next_steps(facts)
    text = report(
        f"Repository health: {_repo_name(root)}",
        [
            ("Summary", recipe.summary_section(summary)),
            (f"Commits per author (last {days} days)", _authors(facts)),
            ("Most recently modified files", bullets(facts["recent_files"])),
            ("TODO / FIXME", _todos(facts)),
            ("Next steps", bullets(steps)),
        ],
        [f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.", *recipe.notes],
    )
    try:
        path = await write_report(out, text, workspace=workspace, approve=approve)
    except ReportNotWritten as exc:
        return recipe.result("incomplete", str(exc), next_steps=steps, facts=facts)
    return recipe.result("completed", summary, artifacts=[str(path)], next_steps=steps, facts=facts)


def parse_shortlog(text: str) -> list[dict[str, Any]]:
    """``git shortlog -sne`` lines → [{author, email, commits}], most commits first."""
    rows = []
    for line in text.splitlines():
        m = _SHORTLOG.match(line)
        if m:
            rows.append({"author": m[2], "email": m[3] or "", "commits": int(m[1])})
    return rows


def parse_recent_files(text: str) -> list[str]:
    """Files in ``git log --stat`` output, newest commit first, each once."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        m = _STAT.match(line)
        if m:
            seen.setdefault(m[1].strip(), None)
    return list(seen)


def parse_todos(text: str) -> list[dict[str, Any]]:
    """``git_grep`` lines "file:line:text" → [{file, line, text}]."""
    rows = []
    for line in text.splitlines():
        m = _GREP.match(line)
        if m and not m[1].startswith(".git/"):
            rows.append({"file": m[1], "line": int(m[2]), "text": m[3].strip()})
    return rows


def in_comments(root: Path, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The grep matches whose marker stands in a comment, and how many were left out.

    Each file is read once from the working tree (never through a link, at most
    ``MAX_SCANNED`` bytes, ``MAX_SCANNED_TOTAL`` in all); a file that cannot be read is
    left out, not guessed at."""
    top = Path(os.path.abspath(root))
    lines: dict[str, set[int]] = {}
    budget = [MAX_SCANNED_TOTAL]
    kept = []
    for row in rows:
        rel = row["file"]
        if rel not in lines:
            lines[rel] = _comment_lines(top, rel, budget)
        if row["line"] in lines[rel]:
            kept.append(row)
    return kept, len(rows) - len(kept)


def _comment_lines(top: Path, rel: str, budget: list[int]) -> set[int]:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return set()
    limit = min(MAX_SCANNED, budget[0])
    try:
        data = read_worktree_file(top, rel, limit + 1)
    except (OSError, ModelRetry):
        return set()
    budget[0] -= len(data)
    if len(data) > limit:
        return set()
    return comment_lines(rel, data.decode("utf-8", "replace"))


def _repo_name(root: Path) -> str:
    return os.path.basename(os.path.abspath(root))


def _authors(facts: dict[str, Any]) -> str:
    rows = [(a["author"], a["email"], a["commits"]) for a in facts["commits_by_author"]]
    return table(["Author", "Email", "Commits"], rows) if rows else "No commits in this period."


def _todos(facts: dict[str, Any]) -> str:
    return bullets([f"`{t['file']}:{t['line']}` {t['text']}" for t in facts["todos"]])


def _facts_text(facts: dict[str, Any]) -> str:
    authors = ", ".join(f"{a['author']} ({a['commits']})" for a in facts["commits_by_author"])
    todos = "; ".join(f"{t['file']}:{t['line']} {t['text']}" for t in facts["todos"][:10])
    return (
        f"Commits per author in the last {facts['days']} days: {authors or 'none'}.\n"
        f"Most recently changed files: {', '.join(facts['recent_files'][:10]) or 'none'}.\n"
        f"TODO/FIXME notes ({len(facts['todos'])}): {todos or 'none'}."
    )


def _fallback(facts: dict[str, Any]) -> str:
    authors = facts["commits_by_author"]
    total = sum(a["commits"] for a in authors)
    return (
        f"{_count(total, 'commit')} by {_count(len(authors), 'author')} in the last "
        f"{facts['days']} days; "
        f"{_count(len(facts['todos']), 'TODO/FIXME note')} found."
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _next_steps(facts: dict[str, Any]) -> list[str]:
    steps = []
    authors = facts["commits_by_author"]
    total = sum(a["commits"] for a in authors)
    if not authors:
        steps.append(f"No commits in {facts['days']} days: check whether the project is active.")
    elif authors[0]["commits"] > 0.7 * total and len(authors) > 1:
        steps.append(f"{authors[0]['author']} made most commits: spread reviews and knowledge.")
    if facts["todos"]:
        first = facts["todos"][0]
        steps.append(
            f"Resolve or ticket the {len(facts['todos'])} TODO/FIXME notes, "
            f"starting with {first['file']}:{first['line']}."
        )
    return steps or ["No action needed."]
