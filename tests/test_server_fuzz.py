"""schemathesis against the published OpenAPI schema: every check, every phase.

The real stack (uvicorn, durable engine on SQLite) answers; schemathesis runs as its CLI
does (examples, coverage, fuzzing and stateful phases, all checks). Pass: no 5xx and no
response or request handling that disagrees with the schema. One setting differs from
schemathesis's defaults: 413 counts as rejecting a schema-violating request (a body over
the 1 MiB limit is refused before it is parsed), and 5xx no longer does; and on POST
/v1/runs a 422 counts as accepting a valid body (its Idempotency-Key came with another).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise.server import ServerSettings
from loopwise.server.principals import parse_key_entry
from server_helpers import KEY, service

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
POSTGRES = "postgresql://127.0.0.1:5432/test"
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

# A valid body whose Idempotency-Key came first with another body is a 422 (IETF
# draft-ietf-httpapi-idempotency-key-header): the fuzzer reuses keys across bodies.
[[operations]]
include-name = "POST /v1/runs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 422, 429]

# AG-UI's RunAgentInput is valid JSON without a user message or a resume, but there is then
# nothing to run: a 422 with one line saying so.
[[operations]]
include-name = "POST /v1/agents/{agent}/agui"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 422, 429]
"""


@contextlib.contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL database (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.sqlite'}"
        return
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")
    name = f"loopwise_fuzz_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _agents_with_a_memory(tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The test agents plus ``remembering``, whose memory holds a few facts, so the
    /v1/memories routes are fuzzed with real data (needs the memory extra's store)."""
    from server_agents import agents

    try:
        import apsw  # noqa: F401
        import sqlite_vec  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        return dict(agents), None
    import asyncio

    from loopwise import Agent
    from loopwise.memory import HashEmbedder, Memory, Namespace
    from loopwise.models.testing import FunctionModel

    memory = Memory(f"sqlite:///{tmp_path / 'memory.sqlite'}", embedder=HashEmbedder())
    mine = parse_key_entry(KEY)[1].memory_key  # the fuzzing key's own namespace
    for i, fact in enumerate(["The staging database is db-7.", "Deploys go to eu-north-1."]):
        for key in ("", "tenant-a", mine(""), mine("tenant-a")):
            asyncio.run(memory.remember(f"{fact} ({i})", namespace=Namespace("remembering", key)))
    remembering = Agent(FunctionModel(lambda m, t: "ok"), name="remembering", memory=memory)
    return {**agents, "remembering": remembering}, memory


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    backend: str, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        if os.environ.get("CI") == "true":
            raise AssertionError("schemathesis is not installed (it is a dev dependency)")
        pytest.skip("schemathesis is not installed: pip install 'schemathesis==4.32.5'")
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    report = tmp_path / "report.json"
    agents, memory = _agents_with_a_memory(tmp_path)
    # Streams end after 1 s so that an SSE request on a waiting run does not hang.
    settings = ServerSettings(heartbeat_seconds=0.2, poll_seconds=0.02, max_stream_seconds=1.0)
    with (
        database(backend, tmp_path) as url,
        service(tmp_path, keys=[KEY], settings=settings, database=url, agents=agents) as live,
    ):
        command = [
            str(SCHEMATHESIS),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            f"{live.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--checks",
            "all",
            "--max-examples",
            os.environ.get("LOOPWISE_FUZZ_EXAMPLES", "30"),
            "--seed",
            os.environ.get("LOOPWISE_FUZZ_SEED", "20261124"),
            "--request-timeout",
            "10",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--no-color",
        ]
        done = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=170, check=False
        )
    if memory is not None:
        memory.close()
    summary = json.loads(report.read_text())
    operations = summary["operations"]["tested"]
    cases = summary["test_cases"]["generated"]
    failures = summary["test_cases"]["unique_failures"]
    kinds = ", ".join(f"{f['code']} {f['title']}" for f in summary["failures"]) or "none"
    figure(
        f"schemathesis {summary['schemathesis_version']} ({backend}): {operations} operations, "
        f"{cases} cases, {failures} failures ({kinds}); phases "
        + ", ".join(f"{k} {v['status']}" for k, v in summary["phases"].items())
    )
    assert done.returncode == 0 and failures == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert operations == summary["operations"]["selected"] == 14  # runs 8, AG-UI 2, memories 4
    assert summary["errors"] == []
