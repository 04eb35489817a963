"""``/v1/memories`` on the real service (durable engine on SQLite, uvicorn) and the
``loopwise memory`` commands: a durable run leaves a memory the API lists, searches,
scopes by tenant and deletes; bad input is a 4xx / exit 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopwise import Agent
from loopwise.memory import HashEmbedder, Memory
from loopwise.models.testing import FunctionModel
from memory_support import need_store_extra
from server_helpers import Api, LiveServer, service, wait_status

pytestmark = pytest.mark.timeout(120)


def _answer(messages: list[Any], tools: list[Any]) -> str:
    return "The backup bucket is lw-backups in eu-west-1."


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    need_store_extra()
    directory = tmp_path_factory.mktemp("memsrv")
    url = f"sqlite:///{directory / 'memory.sqlite'}"
    memory = Memory(url, embedder=HashEmbedder(), summarize="deterministic")
    agents = {"keeper": Agent(FunctionModel(_answer), name="keeper", memory=memory)}
    plain = Agent(FunctionModel(_answer), name="plain")
    with service(directory, agents={**agents, "plain": plain}) as server:
        yield server, url


def test_a_durable_run_leaves_a_memory_the_api_scopes_and_deletes(
    live: tuple[LiveServer, str],
) -> None:
    server, _ = live
    api = Api(server.url)
    for key in ("acme", "globex"):
        run = api.post(
            "/v1/runs",
            {
                "agent": "keeper",
                "input": f"Where are backups for {key}?",
                "metadata": {"memory_key": key},
            },
        ).json()
        wait_status(api, run["id"], "completed")
    listed = api.get("/v1/memories?agent=keeper&key=acme").json()
    [memory] = listed["data"]
    assert memory["namespace"] == {"agent": "keeper", "key": "acme"}
    assert memory["kind"] == "run" and "lw-backups" in memory["text"]
    found = api.get("/v1/memories/search?agent=keeper&key=acme&q=backup%20bucket").json()["data"]
    assert [h["memory"]["id"] for h in found] == [memory["id"]]
    # Another tenant cannot see it, by search or by id.
    other = api.get("/v1/memories/search?agent=keeper&key=globex&q=backups%20acme").json()["data"]
    assert memory["id"] not in [h["memory"]["id"] for h in other]
    assert api.get(f"/v1/memories/{memory['id']}?agent=keeper&key=globex").status == 404
    assert (
        api.request("DELETE", f"/v1/memories/{memory['id']}?agent=keeper&key=globex").status == 404
    )
    assert api.get(f"/v1/memories/{memory['id']}?agent=keeper&key=acme").status == 200
    assert api.request("DELETE", f"/v1/memories/{memory['id']}?agent=keeper&key=acme").status == 204
    assert api.get(f"/v1/memories/{memory['id']}?agent=keeper&key=acme").status == 404
    assert api.get("/v1/memories?agent=keeper&key=acme").json()["data"] == []


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/memories?agent=nobody", 404, "No agent is named 'nobody'"),
        ("/v1/memories?agent=plain", 404, "has no long-term memory"),
        ("/v1/memories", 422, ""),
        ("/v1/memories/search?agent=keeper&q=%20", 422, ""),
        ("/v1/memories/search?agent=keeper&q=x&k=0", 422, ""),
        ("/v1/memories?agent=keeper&limit=500", 422, ""),
    ],
)
def test_bad_requests_are_4xx_with_one_line(
    live: tuple[LiveServer, str], path: str, status: int, words: str
) -> None:
    reply = Api(live[0].url).get(path)
    assert reply.status == status
    message = reply.json()["error"]["message"]
    assert words in message and "\n" not in message


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwise", "memory", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_cli_list_search_show_forget_prune(tmp_path: Path) -> None:
    need_store_extra()
    import asyncio

    from loopwise.memory import Namespace

    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    memory = Memory(url, embedder=HashEmbedder())
    ns = Namespace("ops", "t1")
    kept = asyncio.run(memory.remember("The VPN gateway is vpn.example.com.", namespace=ns))
    asyncio.run(memory.remember("Lunch is at noon.", namespace=Namespace("ops", "t2")))
    memory.close()
    env = {**os.environ, "LOOPWISE_MEMORY_DATABASE": url, "LOOPWISE_MEMORY_EMBEDDER": "hash"}

    listed = _cli("list", "--agent", "ops", "--key", "t1", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [m["id"] for m in json.loads(listed.stdout)] == [kept.id]
    found = _cli("search", "vpn gateway", "--agent", "ops", "--key", "t1", env=env)
    assert found.returncode == 0 and kept.id in found.stdout
    other = _cli("search", "vpn gateway", "--agent", "ops", "--key", "t2", env=env)
    assert kept.id not in other.stdout
    shown = _cli("show", kept.id, env=env)
    assert json.loads(shown.stdout)["text"] == "The VPN gateway is vpn.example.com."
    assert _cli("forget", kept.id, "--agent", "ops", "--key", "t2", env=env).returncode == 1
    assert _cli("forget", kept.id, env=env).returncode == 0
    assert _cli("show", kept.id, env=env).returncode == 1
    pruned = _cli("prune", "--keep", "0", env=env)
    assert pruned.returncode == 0 and "deleted 1 memory" in pruned.stdout

    for args, words in [
        (("search", "x"), "--agent is needed"),
        (("prune",), "give --older-than"),
        (("prune", "--older-than", "soon"), "not an age"),
        (("list", "--embedder", "hash:64"), "made with embedder hash:256"),
    ]:
        done = _cli(*args, env=env)
        assert done.returncode == 2 and words in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
