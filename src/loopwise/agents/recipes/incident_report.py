"""Recipe ``incident-report``: recent errors in the logs and their patterns, memory and
disk state, a timeline, and a report saved as ``incident-YYYYmmdd-HHMMSS.md``.

The recipe lists the log files; the model investigates with the read-only ``system``
toolkit (confined to the log directory) and writes the summary. Every fact in the report
comes from those tools' output; any call the model did not make, the recipe makes.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...approval import ApprovalCallback
from ...events import Event
from ...limits import Budget
from ...models import Model
from ...toolkits import system
from .base import (
    Need,
    Recipe,
    RecipeResult,
    ReportNotWritten,
    bullets,
    call_tool,
    facts_json,
    report,
    table,
    write_report,
)

__all__ = ["ERROR_PATTERN", "incident_report"]

ERROR_PATTERN = r"ERROR|CRITICAL|FATAL|Traceback|Exception"
SYSTEM = """\
You investigate an incident on this machine with read-only tools: logs, memory, disk. \
Call the tools you are asked to call, with exactly the arguments given, then answer \
with a two-sentence account of what went wrong."""

_MATCH = re.compile(r"^(\d+):(.*)$")
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")
_LEVEL = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b[:\s\]-]*")


async def incident_report(
    logs: str | Path,
    *,
    model: str | Model | None = None,
    out_dir: str | Path = ".",
    workspace: str | Path | None = None,
    approve: ApprovalCallback | None = None,
    budget: Budget | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int = 12,
) -> RecipeResult:
    """Investigate the logs under ``logs`` and save the report in ``out_dir``."""
    root = Path(logs)
    tools = system(log_dirs=[root])  # raises UsageError when it is not a directory
    by_name = {t.name: t for t in tools}
    listing = await call_tool(by_name["list_logs"], {"pattern": "*"})
    paths = [line.split("\t")[0] for line in listing.splitlines() if "\t" in line]
    needs = [Need("grep_log", {"path": p, "pattern": ERROR_PATTERN}) for p in paths]
    needs += [Need("memory", {}), Need("disk_usage", {"path": str(root)})]
    calls = "; ".join(f'grep_log(path="{p}", pattern="{ERROR_PATTERN}")' for p in paths)
    task = (
        f"Log files:\n{listing}\n\nCall {calls}; call memory(); call disk_usage(path="
        f'"{root}"). Then say in two sentences what went wrong and when.'
    )
    recipe = Recipe(
        "incident-report",
        model,
        budget=budget,
        approve=approve,
        on_event=on_event,
        max_steps=max_steps,
    )
    found = await recipe.gather(tools, SYSTEM, task, needs)
    errors = [
        e for path, text in zip(paths, found, strict=False) for e in parse_matches(path, text)
    ]
    facts: dict[str, Any] = {
        "logs": paths,
        "errors": len(errors),
        "patterns": patterns(errors),
        "timeline": sorted((e for e in errors if e["time"]), key=lambda e: e["time"])[-40:],
        "memory": _json(found[-2]),
        "disk": _json(found[-1]),
    }
    summary, steps = await recipe.summarise(
        _facts_text(facts), _fallback(facts), grounding=facts_json(facts)
    )
    steps = steps or _next_steps(facts)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = report(
        f"Incident report {stamp}",
        [
            ("Summary", recipe.summary_section(summary)),
            ("Error patterns", _patterns(facts)),
            ("Timeline", _timeline(facts)),
            ("Memory and disk", _resources(facts)),
            ("Next steps", bullets(steps)),
        ],
        [f"Logs read: {', '.join(paths) or 'none'}.", *recipe.notes],
    )
    out = _free_name(Path(out_dir), f"incident-{stamp}")
    try:
        path = await write_report(out, text, workspace=workspace, approve=approve)
    except ReportNotWritten as exc:
        return recipe.result("incomplete", str(exc), next_steps=steps, facts=facts)
    return recipe.result("completed", summary, artifacts=[str(path)], next_steps=steps, facts=facts)


def _free_name(folder: Path, stem: str) -> Path:
    """``stem.md`` in ``folder``, or ``stem-2.md``, ... when a report of that second exists."""
    path, n = folder / f"{stem}.md", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.md"
    return path


def parse_matches(path: str, text: str) -> list[dict[str, Any]]:
    """``grep_log`` output → [{file, line, time, message}]."""
    rows = []
    for raw in text.splitlines()[1:]:
        m = _MATCH.match(raw)
        if m:
            stamp = _STAMP.search(m[2])
            rows.append(
                {
                    "file": Path(path).name,
                    "line": int(m[1]),
                    "time": stamp.group().replace("T", " ") if stamp else "",
                    "message": m[2].strip(),
                }
            )
    return rows


def patterns(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors grouped by their message with times, numbers and ids masked, most first."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for e in errors:
        key = normalise(e["message"])
        counts[key] += 1
        example.setdefault(key, e["message"])
    return [{"pattern": k, "count": n, "example": example[k]} for k, n in counts.most_common(15)]


def normalise(message: str) -> str:
    text = _STAMP.sub("", message)
    text = re.sub(r"^[\s,.\d:Z+\-\[\]]*", "", text)
    level = _LEVEL.search(text)
    if level:
        text = text[level.start() :]
    text = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-f]{8,}\b", "<id>", text)
    text = re.sub(r"\d+(\.\d+)*", "<n>", text)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text).strip()


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"error": text[:300]}
    return value if isinstance(value, dict) else {"value": value}


def _patterns(facts: dict[str, Any]) -> str:
    rows = [(p["count"], f"`{p['pattern']}`") for p in facts["patterns"]]
    return table(["Count", "Pattern"], rows) if rows else "No errors found in the logs."


def _timeline(facts: dict[str, Any]) -> str:
    return bullets(
        [f"{e['time']} · {e['file']}:{e['line']} · {e['message']}" for e in facts["timeline"]]
    )


def _resources(facts: dict[str, Any]) -> str:
    m, d = facts["memory"], facts["disk"]
    return bullets(
        [
            f"Memory: {m.get('used_mb', '?')} MB used of {m.get('total_mb', '?')} MB "
            f"({m.get('used_percent', '?')} %), swap used {m.get('swap_used_mb', '?')} MB.",
            f"Disk ({d.get('path', '?')}): {d.get('used_gb', '?')} GB used of "
            f"{d.get('total_gb', '?')} GB ({d.get('used_percent', '?')} %), "
            f"{d.get('free_gb', '?')} GB free.",
        ]
    )


def _facts_text(facts: dict[str, Any]) -> str:
    top = "; ".join(f"{p['count']} x {p['pattern']}" for p in facts["patterns"][:8])
    first = facts["timeline"][0] if facts["timeline"] else None
    last = facts["timeline"][-1] if facts["timeline"] else None
    span = f"from {first['time']} to {last['time']}" if first and last else "with no timestamps"
    return (
        f"{facts['errors']} error lines in {len(facts['logs'])} log files, {span}.\n"
        f"Error patterns: {top or 'none'}.\n"
        f"Memory: {facts['memory'].get('used_percent', '?')} % used. "
        f"Disk: {facts['disk'].get('used_percent', '?')} % used."
    )


def _fallback(facts: dict[str, Any]) -> str:
    top = facts["patterns"][0]["pattern"] if facts["patterns"] else "none"
    return f"{facts['errors']} error lines in the logs; the most frequent: {top}."


def _next_steps(facts: dict[str, Any]) -> list[str]:
    steps = [f"Investigate the most frequent error: {p['pattern']}" for p in facts["patterns"][:2]]
    if float(facts["disk"].get("used_percent", 0) or 0) > 90:
        steps.append("Free disk space: the filesystem is over 90 % full.")
    return steps or ["No errors found: check other sources (metrics, traces)."]
