"""End to end: a run's spans exported over OTLP to Arize Phoenix (a tracing backend nobody
here wrote) and read back through Phoenix's REST API.

Phoenix lives in a virtual environment of its own (.cache/phoenix, made by
scripts/test.sh; its dependencies would clash with ours), or wherever
``LOOPWISE_PHOENIX`` points to its ``phoenix`` executable.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from figures import figure

ROOT = Path(__file__).parent.parent
PHOENIX = Path(os.environ.get("LOOPWISE_PHOENIX", ROOT / ".cache" / "phoenix" / "bin" / "phoenix"))

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PHOENIX.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Arize Phoenix is not installed at {PHOENIX} (scripts/test.sh makes it)")
        pytest.skip(f"Arize Phoenix is not installed at {PHOENIX} (scripts/test.sh makes it)")
    port, grpc = _free_port(), _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
    }
    proc = subprocess.Popen(
        [str(PHOENIX), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{url}/v1/projects")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                    pytest.fail(f"Phoenix did not start: {err}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


RUN = textwrap.dedent(
    """
    from loopwise import Agent, tool
    from loopwise.models.testing import ScriptedModel, call
    from loopwise.tracing import Tracing

    @tool
    def add(a: int, b: int) -> int:
        '''Add.'''
        return a + b

    helper = Agent(ScriptedModel([call("add", a=2, b=2), "4"]), tools=[add], name="helper")
    lead = Agent(
        ScriptedModel([call("helper", task="two plus two"), "It is 4."]),
        tools=[helper.as_tool()],
        name="lead",
        capabilities=[Tracing()],
    )
    print(lead.run_sync("What is 2+2?").status)
    """
)


def test_spans_reach_phoenix_over_otlp(phoenix: str) -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
        "OTEL_SERVICE_NAME": "loopwise-e2e",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "completed", done.stderr[-2000:]
    spans: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(spans) < 8 and time.monotonic() < deadline:
        spans = _get(f"{phoenix}/v1/projects/default/spans?limit=100")["data"]
        time.sleep(0.3)
    names = sorted(s["name"] for s in spans)
    assert names == [
        "chat scripted", "chat scripted", "chat scripted", "chat scripted",
        "execute_tool add", "execute_tool helper", "invoke_agent helper", "invoke_agent lead",
    ]  # fmt: skip
    by_id = {s["context"]["span_id"]: s for s in spans}
    named = {s["name"]: s for s in spans}
    child = named["invoke_agent helper"]
    assert by_id[child["parent_id"]]["name"] == "execute_tool helper"
    assert by_id[named["execute_tool helper"]["parent_id"]]["name"] == "invoke_agent lead"
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    lead = named["invoke_agent lead"]["attributes"]
    assert lead["gen_ai.operation.name"] == "invoke_agent"
    assert lead["gen_ai.usage.input_tokens"] > 0 and lead["loopwise.status"] == "completed"
    figure(f"tracing: {len(spans)} spans of a two-agent run read back from Arize Phoenix")
