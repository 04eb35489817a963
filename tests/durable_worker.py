"""A durable worker process for the tests: ``python tests/durable_worker.py``.

Configured by environment: LW_DB (database URL), LW_AGENTS (agents module, default
``durable_agents``), LW_EXECUTOR (executor id, optional),
LW_HEARTBEAT / LW_DEAD_AFTER (seconds), LW_CONCURRENCY. Prints ``ready <executor id>``
once it runs workflows; stops cleanly on SIGTERM (tests mostly use SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import signal

from loopwise.durable import DurableEngine, load_agents


async def main() -> None:
    engine = DurableEngine(
        load_agents(os.environ.get("LW_AGENTS", "durable_agents")),
        database=os.environ["LW_DB"],
        executor_id=os.environ.get("LW_EXECUTOR") or None,
        concurrency=int(os.environ.get("LW_CONCURRENCY", "8")),
        heartbeat_seconds=float(os.environ.get("LW_HEARTBEAT", "0.5")),
        dead_after_seconds=float(os.environ.get("LW_DEAD_AFTER", "2")),
        poll_seconds=0.05,
    )
    await engine.start()
    print("ready", engine.executor_id, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
