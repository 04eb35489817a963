"""What the OS sandbox costs per run: bubblewrap against a plain subprocess, same command.

    .venv/bin/python bench/sandbox.py [--runs N] [--json]

Both sides run the same command (``/bin/true``, then ``python3 -c pass``) with asyncio's
subprocess API and wait for it; the sandbox side adds namespaces, mounts, limits, the
workspace snapshots (files written) and, as root, the workspace hand-over. Medians of N
runs each, interleaved after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loopwise.sandbox import BubblewrapSandbox, Limits

COMMANDS = {"true": ["/bin/true"], "python": ["/usr/bin/python3", "-c", "pass"]}


@dataclass(frozen=True, slots=True)
class Figure:
    command: str
    runs: int
    baseline_ms: float
    sandbox_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.sandbox_ms - self.baseline_ms


async def _plain(argv: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv} exited {process.returncode}")


async def _timed(action: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await action()
    return (time.perf_counter() - started) * 1000


async def measure(name: str, runs: int, workspace: Path) -> Figure:
    """Median milliseconds per run of COMMANDS[name], plain and sandboxed."""
    argv = COMMANDS[name]
    sandbox = BubblewrapSandbox()
    limits = Limits(wall_seconds=30)

    async def boxed() -> None:
        result = await sandbox.run(argv, workspace=workspace, limits=limits)
        if result.exit_code != 0:
            raise RuntimeError(f"sandboxed {argv} exited {result.exit_code}: {result.stderr}")

    async def plain() -> None:
        await _plain(argv)

    await boxed()  # warm-up (and the one-time probe)
    await plain()
    base: list[float] = []
    boxed_ms: list[float] = []
    for _ in range(runs):
        base.append(await _timed(plain))
        boxed_ms.append(await _timed(boxed))
    return Figure(name, runs, statistics.median(base), statistics.median(boxed_ms))


async def main_async(runs: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        for i in range(50):  # a small project, so the snapshots have something to walk
            (workspace / f"file{i}.txt").write_text("x" * 100)
        return [await measure(name, runs, workspace) for name in COMMANDS]


def render(figures: list[Figure]) -> str:
    lines = [
        "Sandbox cost per run (median ms; workspace of 50 files)",
        f"{'command':<10}{'runs':>6}{'plain':>10}{'bubblewrap':>12}{'overhead':>10}",
    ]
    for f in figures:
        lines.append(
            f"{f.command:<10}{f.runs:>6}{f.baseline_ms:>10.1f}{f.sandbox_ms:>12.1f}"
            f"{f.overhead_ms:>10.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args.runs))
    if args.json:
        print(json.dumps([{**asdict(f), "overhead_ms": f.overhead_ms} for f in figures]))
    else:
        print(render(figures))


if __name__ == "__main__":
    main()
