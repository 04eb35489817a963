"""An API-only server (no workers) for the SSE tests: ``python tests/sse_server.py``.

Configured by environment: LW_DB (database URL), LW_AGENTS (default ``durable_agents``),
LW_MAX_STREAMS (streams per key). Prints ``port <n>`` once it serves; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os

import uvicorn

from loopwise.durable import DurableEngine, load_agents
from loopwise.server import ServerSettings, create_app


async def main() -> None:
    engine = DurableEngine(
        load_agents(os.environ.get("LW_AGENTS", "durable_agents")),
        database=os.environ["LW_DB"],
        workers=False,
    )
    settings = ServerSettings(max_streams_per_key=int(os.environ.get("LW_MAX_STREAMS", "1000")))
    app = create_app(engine, require_auth=False, settings=settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", backlog=1024)
    )
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            return
        await asyncio.sleep(0.01)
    print("port", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
