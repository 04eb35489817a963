"""The HTTP service under load: runs per second, latencies, and what waiting runs cost.

    .venv/bin/python bench/api.py [--runs 100] [--steps 5] [--samples 20] [--waiting 200]
                                  [--idle-seconds 5] [--no-postgres] [--json]

The whole stack runs in this process as ``loopwise serve`` would (uvicorn on loopback,
the durable engine with in-process workers and its default settings), driven over real
HTTP by urllib. Agents use an instant ``FunctionModel``: each run is STEPS model calls
(STEPS-1 calls of a trivial tool, then the answer). On SQLite (a fresh file) and, when
one answers at 127.0.0.1:5432 (database ``test``, trust auth), PostgreSQL (a fresh
database, dropped afterwards).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loopwise import Agent, tool
from loopwise.messages import Message, ToolDefinition, ToolResultPart, UserMessage
from loopwise.models.testing import FunctionModel, ScriptedCall, call

POSTGRES = "postgresql://127.0.0.1:5432/test"


# -- agents -------------------------------------------------------------------------------


def _done(messages: list[Message]) -> int:
    return sum(
        isinstance(p, ToolResultPart)
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
    )


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(requires_approval=True)
def publish(title: str) -> str:
    """Publish a post (needs approval)."""
    return f"published {title}"


def make_agents(steps: int) -> dict[str, Agent[Any, Any]]:
    def work(messages: list[Message], tools: list[ToolDefinition]) -> str | ScriptedCall:
        done = _done(messages)
        return call("add", a=done, b=1) if done < steps - 1 else "done"

    def gate(messages: list[Message], tools: list[ToolDefinition]) -> str | ScriptedCall:
        return call("publish", title="hello") if _done(messages) == 0 else "published"

    return {
        "work": Agent(FunctionModel(work), tools=[add], max_steps=steps + 1),
        "gate": Agent(FunctionModel(gate), tools=[publish]),
    }


# -- the service and a client ---------------------------------------------------------------


@contextlib.contextmanager
def serve(database: str, agents: dict[str, Agent[Any, Any]]) -> Iterator[str]:
    """The API over a DurableEngine on ``database``, served by uvicorn in a thread."""
    import uvicorn

    from loopwise.durable import DurableEngine
    from loopwise.server import create_app

    app = create_app(DurableEngine(agents, database=database), require_auth=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


class Client:
    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def submit(self, agent: str) -> dict[str, Any]:
        return dict(self.call("POST", "/v1/runs", {"agent": agent, "input": "go"}))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/runs/{run_id}"))

    def events(self, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Event data from the SSE stream (with ``seq``), until the caller stops or it ends."""
        request = urllib.request.Request(
            f"{self.url}/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(after)}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            seq = 0
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: "):
                    yield {**json.loads(line[6:]), "seq": seq}

    def count(self, agent: str, status: str) -> int:
        total, cursor = 0, None
        while True:
            query = {"agent": agent, "status": status, "limit": 200}
            if cursor:
                query["cursor"] = cursor
            page = self.call("GET", "/v1/runs?" + urllib.parse.urlencode(query))
            total += len(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return total


def _wait(check: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the runs did not get there in time")
        time.sleep(0.02)


# -- measurements -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    backend: str
    runs: int
    steps: int
    seconds: float
    first_step_ms: tuple[float, float]  # median, p95
    approval_ms: tuple[float, float]
    waiting: int
    idle_cpu_percent: float
    new_run_while_waiting_ms: float

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds

    @property
    def steps_per_second(self) -> float:
        return self.runs * self.steps / self.seconds


def throughput(client: Client, runs: int) -> float:
    """Seconds from the first submission until the last of ``runs`` runs finished."""
    before = client.count("work", "completed")
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = [r["id"] for r in pool.map(lambda _: client.submit("work"), range(runs))]
    _wait(lambda: client.count("work", "completed") >= before + runs)
    finished = max(client.run(i)["finished_at"] for i in ids)
    return float(finished - started)


def first_step(client: Client) -> float:
    """Milliseconds from POST /v1/runs to the first model response (engine timestamps)."""
    started = time.time()
    run = client.submit("work")
    for event in client.events(run["id"]):
        if event["type"] == "model_response":
            return (float(event["time"]) - started) * 1000
    raise RuntimeError("the run ended without a model response")


def approval(client: Client) -> float:
    """Milliseconds from POST .../approvals to the approved tool's result."""
    run = client.submit("gate")
    last = 0
    for event in client.events(run["id"]):
        last = event["seq"]
        if event["type"] == "approval_requested":
            break
    _wait(lambda: client.run(run["id"])["status"] == "input_required")
    call_id = client.run(run["id"])["pending_approvals"][0]["call_id"]
    started = time.time()
    client.call("POST", f"/v1/runs/{run['id']}/approvals/{call_id}", {"decision": "approve"})
    for event in client.events(run["id"], after=last):
        if event["type"] == "tool_result":
            return (float(event["time"]) - started) * 1000
    raise RuntimeError("the approved call never ran")


def idle_cost(client: Client, waiting: int, seconds: float) -> tuple[float, float]:
    """CPU % of one core (this whole process) with ``waiting`` runs parked for approval,
    and how long a new run takes to finish meanwhile (ms)."""
    before = client.count("gate", "input_required")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.submit("gate"), range(waiting)))
    _wait(lambda: client.count("gate", "input_required") >= before + waiting)
    time.sleep(min(1.0, seconds))  # let the last submissions' work settle
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    percent = (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
    started = time.time()
    run = client.submit("work")
    _wait(lambda: client.run(run["id"])["status"] == "completed", timeout=60)
    return percent, (client.run(run["id"])["finished_at"] - started) * 1000


def _median_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * len(ordered)))]


def measure(
    backend: str,
    database: str,
    *,
    runs: int,
    steps: int,
    samples: int,
    waiting: int,
    idle_seconds: float,
) -> Figures:
    with serve(database, make_agents(steps)) as url:
        client = Client(url)
        client.submit("work")  # warm up (first launch, imports, connections)
        _wait(lambda: client.count("work", "completed") >= 1)
        seconds = throughput(client, runs)
        firsts = [first_step(client) for _ in range(samples)]
        approvals = [approval(client) for _ in range(samples)]
        cpu, new_run = idle_cost(client, waiting, idle_seconds)
    return Figures(
        backend=backend,
        runs=runs,
        steps=steps,
        seconds=seconds,
        first_step_ms=_median_p95(firsts),
        approval_ms=_median_p95(approvals),
        waiting=waiting,
        idle_cpu_percent=cpu,
        new_run_while_waiting_ms=new_run,
    )


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A fresh database on the local PostgreSQL (dropped afterwards), or None if none runs."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=2)
    except Exception as exc:
        print(f"PostgreSQL at {POSTGRES} not reachable ({exc}); skipping it", file=sys.stderr)
        yield None
        return
    name = f"loopwise_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def render(figures: list[Figures]) -> str:
    rows = [
        ("runs through the API", lambda f: f"{f.runs} x {f.steps} steps"),
        ("runs per second", lambda f: f"{f.runs_per_second:.1f}"),
        ("steps per second", lambda f: f"{f.steps_per_second:.0f}"),
        (
            "submit -> first step, median / p95 ms",
            lambda f: "{:.0f} / {:.0f}".format(*f.first_step_ms),
        ),
        (
            "approval -> next step, median / p95 ms",
            lambda f: "{:.0f} / {:.0f}".format(*f.approval_ms),
        ),
        ("runs waiting for approval", lambda f: str(f.waiting)),
        ("idle CPU while they wait (% of a core)", lambda f: f"{f.idle_cpu_percent:.1f}"),
        ("a new run meanwhile, submit -> done ms", lambda f: f"{f.new_run_while_waiting_ms:.0f}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{f.backend:>14}" for f in figures)]
    for label, cell in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell(f):>14}" for f in figures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = {
        "runs": args.runs,
        "steps": args.steps,
        "samples": args.samples,
        "waiting": args.waiting,
        "idle_seconds": args.idle_seconds,
    }
    results: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        results.append(measure("sqlite", sqlite, **sizes))
    if not args.no_postgres:
        with postgres() as url:
            if url is not None:
                results.append(measure("postgresql", url, **sizes))
    if args.json:
        data = [
            {
                **asdict(f),
                "runs_per_second": f.runs_per_second,
                "steps_per_second": f.steps_per_second,
            }
            for f in results
        ]
        print(json.dumps(data, indent=2))
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
