"""One run on a workspace, as every backend does it: hold the tree, walk it, watch the quota,
launch, walk again, and describe what happened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from .api import Limits, SandboxResult
from .guard import SANDBOX, hold_async
from .process import Outcome, signal_verdict
from .quota import QuotaWatch, describe, prune_deep, trim, within
from .workspace import MAX_DEPTH, MAX_ENTRIES, Scan, changed_files, scan

__all__ = ["supervise"]

Launch = Callable[[asyncio.Event], Awaitable[Outcome]]


async def supervise(
    root: Path, limits: Limits, owner: tuple[int, int] | None, launch: Launch
) -> SandboxResult:
    """Run ``launch(stop)`` on ``root``; ``owner`` (uid, gid) is given the tree first.

    Host-side readers of the tree (the git tools) wait while it runs (see ``guard``).
    """
    cap = limits.max_workspace_files + 1
    async with hold_async(SANDBOX, root):
        before = await asyncio.to_thread(scan, root, max_entries=cap, record=cap, owner=owner)
        watch = QuotaWatch(root, limits, before)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch.watch(stop))
        try:
            outcome = await launch(stop)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        after, pruned, removed = await asyncio.to_thread(_settle, root, before, watch, cap)
    code = outcome.returncode
    if code is not None and code < 0:
        code = 128 - code
    if outcome.timed_out:
        killed_by: str | None = "timeout"
    elif outcome.stopped:
        killed_by = "workspace_quota"
    else:
        killed_by = signal_verdict(code)
    notes = [watch.verdict(), _pruned(pruned), _removed(removed), describe(after, limits)]
    return SandboxResult(
        exit_code=code,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        duration=outcome.duration,
        timed_out=outcome.timed_out,
        killed_by=killed_by,
        files_written=changed_files(before.files, after.files),
        workspace_note=" ".join(n for n in notes if n) or None,
    )


def _settle(root: Path, before: Scan, watch: QuotaWatch, cap: int) -> tuple[Scan, int, int]:
    """The workspace after the run, once what the run made beyond its limits is removed:
    (walk, trees pruned below the walk's depth, entries removed over the quota)."""
    after = scan(root, max_entries=cap, record=cap, nodes=False)
    pruned = prune_deep(root, before, after) if after.too_deep else 0
    if pruned:
        after = scan(root, max_entries=cap, record=cap, nodes=False)
    removed = 0
    if not within(after, watch.allowed):
        big = min(4 * max(cap, before.entries + 1), MAX_ENTRIES)
        removed, after = trim(root, before, watch.allowed, big)
    return after, pruned, removed


def _removed(count: int) -> str | None:
    if not count:
        return None
    what = "entry" if count == 1 else "entries"
    return (
        f"{count:,} {what} the run created (largest files first) were removed to bring the "
        "workspace back within its quota."
    )


def _pruned(count: int) -> str | None:
    if not count:
        return None
    return (
        f"Directories the run nested more than {MAX_DEPTH} levels deep ({count} "
        f"{'tree' if count == 1 else 'trees'}) were removed: deeper ones cannot be measured."
    )
