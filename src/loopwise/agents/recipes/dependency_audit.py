"""Recipe ``dependency-audit``: the pinned versions of a requirements file against the
latest releases on PyPI (any server with PyPI's JSON API), the packages a major version
behind, and the upgrade commands, as a Markdown report.

The model fetches ``<pypi_url>/pypi/<name>/json`` with ``http_get`` and writes the summary;
the versions in the report come from those responses (the recipe fetches any the model
did not). ``http_get`` refuses private addresses: a local mirror must be named in ``allow``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...approval import ApprovalCallback
from ...errors import UsageError
from ...events import Event
from ...limits import Budget
from ...models import Model
from ...toolkits import http
from .base import Need, Recipe, RecipeResult, ReportNotWritten, bullets, report, table, write_report

__all__ = ["dependency_audit", "parse_requirements"]

SYSTEM = """\
You audit Python dependencies. Fetch each URL you are given with http_get, exactly as \
given, then answer with a two-sentence summary of how outdated the dependencies are."""

_REQ = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(?:(==|>=|~=|<=|>|<|!=)\s*([^\s;,]+))?"
)


async def dependency_audit(
    requirements: str | Path,
    *,
    model: str | Model | None = None,
    pypi_url: str = "https://pypi.org",
    allow: Sequence[str] = (),
    out: str | Path = "dependency-audit.md",
    workspace: str | Path | None = None,
    approve: ApprovalCallback | None = None,
    budget: Budget | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int = 12,
) -> RecipeResult:
    """Audit ``requirements`` against ``pypi_url`` and write the report to ``out``."""
    packages = parse_requirements(_read(requirements))
    if not packages:
        raise UsageError(f"{str(requirements)!r} names no packages.")
    base = pypi_url.rstrip("/")
    urls = {p["name"]: f"{base}/pypi/{p['name']}/json" for p in packages}
    tools = http(allow=list(allow))
    task = "Fetch these URLs with http_get:\n" + "\n".join(urls.values())
    recipe = Recipe(
        "dependency-audit",
        model,
        budget=budget,
        approve=approve,
        on_event=on_event,
        max_steps=max_steps,
    )
    pages = await recipe.gather(
        tools, SYSTEM, task, [Need("http_get", {"url": u}) for u in urls.values()]
    )
    rows = [_audit(p, page) for p, page in zip(packages, pages, strict=True)]
    facts: dict[str, Any] = {"pypi_url": base, "packages": rows}
    summary, steps = await recipe.summarise(_facts_text(rows), _fallback(rows))
    commands = [r["upgrade"] for r in rows if r["upgrade"]]
    steps = steps or _next_steps(rows)
    text = report(
        "Dependency audit",
        [
            ("Summary", summary),
            ("Packages", _table(rows)),
            (
                "A major version behind",
                bullets(
                    [
                        f"{r['name']} {r['pinned']} → {r['latest']}"
                        for r in rows
                        if r["major_behind"]
                    ]
                ),
            ),
            ("Upgrade commands", "\n".join(["```sh", *commands, "```"]) if commands else ""),
            ("Next steps", bullets(steps)),
        ],
        [f"Versions from {base}/pypi/<name>/json.", *recipe.notes],
    )
    try:
        path = await write_report(out, text, workspace=workspace, approve=approve)
    except ReportNotWritten as exc:
        return recipe.result("incomplete", str(exc), next_steps=steps, facts=facts)
    return recipe.result("completed", summary, artifacts=[str(path)], next_steps=steps, facts=facts)


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read requirements file {str(path)!r}: {exc.strerror}.") from None


def parse_requirements(text: str) -> list[dict[str, Any]]:
    """Requirement lines → [{name, spec, pinned}]; options (``-r``, ``-e``) and comments skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        m = _REQ.match(line)
        if m is None:
            raise UsageError(f"Cannot read the requirement {raw.strip()!r}.")
        pinned = m[4] if m[3] == "==" else None
        found.append({"name": m[1].lower(), "spec": line, "pinned": pinned})
    return found


def _audit(package: dict[str, Any], page: str) -> dict[str, Any]:
    name, pinned = package["name"], package["pinned"]
    row = {**package, "latest": None, "major_behind": False, "upgrade": "", "error": ""}
    data = _json_body(page)
    latest = data.get("info", {}).get("version") if data else None
    if data is None or not isinstance(latest, str):
        row["error"] = page.splitlines()[0][:200] if page else "no answer"
        return row
    row["latest"] = latest
    if pinned is None or pinned != latest:
        row["upgrade"] = f"pip install --upgrade '{name}=={latest}'"
    if pinned is not None:
        row["major_behind"] = _major(latest) > _major(pinned)
        row["releases_behind"] = _newer(data.get("releases", {}), pinned)
    return row


def _json_body(page: str) -> dict[str, Any] | None:
    start, end = page.find("{"), page.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(page[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _major(version: str) -> int:
    m = re.match(r"\s*v?(\d+)", version)
    return int(m[1]) if m else 0


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:4])


def _newer(releases: Any, pinned: str) -> int:
    if not isinstance(releases, dict):
        return 0
    return sum(1 for v in releases if re.fullmatch(r"[\d.]+", v) and _key(v) > _key(pinned))


def _table(rows: list[dict[str, Any]]) -> str:
    def status(r: dict[str, Any]) -> str:
        if r["error"]:
            return f"not found: {r['error']}"
        if r["pinned"] is None:
            return "not pinned"
        if r["major_behind"]:
            return "major version behind"
        return "up to date" if r["pinned"] == r["latest"] else "behind"

    return table(
        ["Package", "Pinned", "Latest", "Status"],
        [(r["name"], r["pinned"] or "-", r["latest"] or "?", status(r)) for r in rows],
    )


def _facts_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['name']}: pinned {r['pinned'] or 'not pinned'}, latest {r['latest'] or 'unknown'}"
        + (", a major version behind" if r["major_behind"] else "")
        for r in rows
    )


def _fallback(rows: list[dict[str, Any]]) -> str:
    behind = [r["name"] for r in rows if r["major_behind"]]
    outdated = sum(1 for r in rows if r["upgrade"])
    return (
        f"{outdated} of {len(rows)} packages can be upgraded; a major version behind: "
        f"{', '.join(behind) or 'none'}."
    )


def _next_steps(rows: list[dict[str, Any]]) -> list[str]:
    steps = [
        f"Read the changelog of {r['name']} before the major upgrade to {r['latest']}."
        for r in rows
        if r["major_behind"]
    ]
    steps += [f"Pin {r['name']} to an exact version." for r in rows if r["pinned"] is None]
    return steps or ["Nothing to do: every package is pinned to its latest version."]
