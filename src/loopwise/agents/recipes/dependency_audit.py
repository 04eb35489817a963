"""Recipe ``dependency-audit``: the pinned versions of a requirements file against the
latest releases on PyPI (any server with PyPI's JSON API), the packages a major version
behind, and the upgrade commands, as a Markdown report.

The model fetches ``<pypi_url>/pypi/<name>/json`` with ``http_get`` and writes the summary;
the versions in the report come from those responses (the recipe fetches any the model
did not, and fetches again in full any answer the model saw cut short). ``http_get``
refuses private addresses: a local mirror must be named in ``allow``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...approval import ApprovalCallback
from ...errors import UsageError
from ...events import Event
from ...limits import Budget
from ...models import Model
from ...toolkits import http
from .base import (
    Need,
    Recipe,
    RecipeResult,
    ReportNotWritten,
    bullets,
    call_tool,
    check_out,
    facts_json,
    report,
    table,
    write_report,
)

__all__ = ["dependency_audit", "parse_requirements"]

SYSTEM = """\
You audit Python dependencies. Fetch each URL you are given with http_get, exactly as \
given, then answer with a two-sentence summary of how outdated the dependencies are."""

_REQ = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*"
    r"(?:(===|==|>=|~=|<=|>|<|!=)\s*([^\s;,]+))?\s*(?:$|[;,@]|[<>=!~])"
)
# Direct references pip accepts that name no PyPI project: paths and URLs.
_DIRECT = re.compile(r"[./~]|[A-Za-z][A-Za-z0-9+.-]*://")
# A PEP 440 version: epoch, release, pre, post, dev (local versions are ignored).
_PEP440 = re.compile(
    r"v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?"
    r"(?:-(\d+)|[-_.]?(?:post|rev|r)[-_.]?(\d*))?(?:[-_.]?dev[-_.]?(\d*))?(?:\+[a-z0-9._-]+)?",
    re.IGNORECASE,
)
_PHASES = {"a": 0, "alpha": 0, "b": 1, "beta": 1}


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
    check_out(out)
    packages = parse_requirements(_read(requirements))
    if not packages:
        raise UsageError(f"{str(requirements)!r} names no packages.")
    base = pypi_url.rstrip("/")
    urls = {p["name"]: f"{base}/pypi/{p['name']}/json" for p in packages}
    tools = http(allow=list(allow))
    # The recipe's own reads of answers too long for the model's view (PyPI's JSON for a
    # project with many releases runs to megabytes).
    [full] = http(allow=list(allow), timeout=60.0, max_bytes=64_000_000, max_chars=10**9)
    task = "Fetch these URLs with http_get:\n" + "\n".join(urls.values())
    recipe = Recipe(
        "dependency-audit",
        model,
        budget=budget,
        approve=approve,
        on_event=on_event,
        max_steps=max_steps,
    )
    found = await recipe.gather(
        tools, SYSTEM, task, [Need("http_get", {"url": u}) for u in urls.values()]
    )
    pages = dict(zip(urls.values(), found, strict=True))
    for url, page in pages.items():
        if page.startswith("HTTP 200") and _json_body(page) is None:  # cut short
            pages[url] = await call_tool(full, {"url": url})
            recipe.notes.append(f"The recipe read {url} in full: the model saw part of it.")
    rows = [_audit(p, pages[urls[p["name"]]]) for p in packages]
    facts: dict[str, Any] = {"pypi_url": base, "packages": rows}
    summary, steps = await recipe.summarise(
        _facts_text(rows), _fallback(rows), grounding=facts_json(rows)
    )
    commands = list(dict.fromkeys(r["upgrade"] for r in rows if r["upgrade"]))
    steps = steps or _next_steps(rows)
    text = report(
        "Dependency audit",
        [
            ("Summary", recipe.summary_section(summary)),
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
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"Cannot read requirements file {str(path)!r}: {exc.strerror}.") from None


def parse_requirements(text: str) -> list[dict[str, Any]]:
    """Requirement lines → [{name, spec, pinned}]; options (``-r``, ``-e``), comments, paths
    and URLs skipped. ``pinned`` is the version of an exact pin (``==1.2``, not ``==1.*``)."""
    found = []
    for raw in text.splitlines():
        line = re.split(r"\s#", raw)[0].strip()
        if not line or line.startswith(("#", "-")) or _DIRECT.match(line):
            continue
        m = _REQ.match(line)
        if m is None:
            raise UsageError(f"Cannot read the requirement {raw.strip()!r}.")
        exact = m[3] in ("==", "===") and "*" not in m[4]
        pinned = m[4] if exact else None
        found.append({"name": m[1].lower(), "spec": line, "pinned": pinned})
    return found


def _audit(package: dict[str, Any], page: str) -> dict[str, Any]:
    name, pinned = package["name"], package["pinned"]
    row = {**package, "latest": None, "major_behind": False, "upgrade": "", "error": ""}
    data = _json_body(page) or {}
    info = data.get("info")
    latest = info.get("version") if isinstance(info, dict) else None
    if not isinstance(latest, str) or version_key(latest) is None:
        first = page.splitlines()[0][:200] if page.strip() else "no answer"
        row["error"] = f"no valid version in {first}" if page.startswith("HTTP 200") else first
        return row
    row["latest"] = latest
    new, old = version_key(latest), version_key(pinned) if pinned else None
    if pinned is None or old is None or (new is not None and new > old):
        row["upgrade"] = f"pip install --upgrade '{name}=={latest}'"
    if old is not None and new is not None:
        row["major_behind"] = (new[0], new[1][0]) > (old[0], old[1][0])
        row["ahead"] = old > new
        row["releases_behind"] = _newer(data.get("releases", {}), old)
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


def version_key(version: str) -> tuple[Any, ...] | None:
    """A sort key for a PEP 440 version, ``None`` for anything else (``latest``)."""
    m = _PEP440.fullmatch(version.strip())
    if m is None:
        return None
    epoch, release, phase, pre, post_n, post, dev = m.groups()
    numbers = [int(n) for n in release.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    if phase:
        pre_key: tuple[int, ...] = (0, _PHASES.get(phase.lower(), 2), int(pre or 0))
    else:
        pre_key = (-1,) if dev is not None and post is None and post_n is None else (1,)
    after = post_n or post
    post_key = (int(after or 0),) if after is not None else (-1,)
    dev_key = (int(dev or 0),) if dev is not None else (sys.maxsize,)
    return int(epoch or 0), tuple(numbers), pre_key, post_key, dev_key


def _newer(releases: Any, pinned: tuple[Any, ...]) -> int:
    """Final releases newer than the pinned version."""
    if not isinstance(releases, dict):
        return 0
    keys = [version_key(v) for v in releases if re.fullmatch(r"[\d.]+", v)]
    return sum(1 for k in keys if k is not None and k > pinned)


def _table(rows: list[dict[str, Any]]) -> str:
    def status(r: dict[str, Any]) -> str:
        if r["error"]:
            return f"not found: {r['error']}"
        if r["pinned"] is None:
            return "not pinned"
        if r["major_behind"]:
            return "major version behind"
        if r.get("ahead"):
            return "newer than the latest release"
        return "behind" if r["upgrade"] else "up to date"

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
    steps += [
        f"Upgrade {r['name']} to {r['latest']}."
        for r in rows
        if r["upgrade"] and r["pinned"] and not r["major_behind"]
    ]
    steps += [f"Pin {r['name']} to an exact version." for r in rows if r["pinned"] is None]
    steps += [f"Check {r['name']}: {r['error']}." for r in rows if r["error"]]
    steps = list(dict.fromkeys(steps))  # a package may be on several lines
    return steps or ["Nothing to do: every package is pinned to its latest version."]
