"""Tenants: every API key names a principal; runs, approvals and memories are scoped to it.

The full matrix: every route x {no key, wrong key, another principal's run, another
principal's memory}; pass: 0 cross-principal reads or writes (another principal's runs
and memories are 404 or absent, never changed), restricted principals see only their
agents, admins see everything, decisions record who made them, and databases made before
principals existed are upgraded in place (SQLite and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attack_support import GuardedServer, guarded_service
from figures import figure
from loopwise import Agent
from loopwise.errors import UsageError
from loopwise.messages import Message, TextPart, UserMessage
from loopwise.models.testing import FunctionModel
from loopwise.server import ApiKeys, Principal, load_keys_file
from loopwise.server.principals import parse_key_entry
from memory_support import need_store_extra
from server_helpers import Api, Reply, wait_status

pytestmark = pytest.mark.timeout(180)

KEYS = {
    "alice": "alice-key-0123456789abcdef",
    "bob": "bob-key-0123456789abcdefgh",
    "carol": "carol-key-0123456789abcdef",
    "root": "root-key-0123456789abcdefg",
}
WRONG = "wrong-key-0123456789abcdef"
POSTGRES = "postgresql://127.0.0.1:5432/test"


def _noted(messages: list[Message], tools: list[Any]) -> str:
    task = next(
        p.text
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, TextPart)
    )
    return f"Noted for later: {task}"


def _keys(directory: Path) -> ApiKeys:
    """alice and bob as name:key; carol (counting only, memory 'team') and root (admin)
    from a TOML keys file, root's by its hash."""
    file = directory / "keys.toml"
    root = hashlib.sha256(KEYS["root"].encode()).hexdigest()
    file.write_text(
        f'[[keys]]\nname = "carol"\nkey = "{KEYS["carol"]}"\nagents = ["counting"]\n'
        f'memory = "team"\n\n[[keys]]\nname = "root"\nsha256 = "{root}"\nadmin = true\n'
    )
    named = ApiKeys.of([f"alice:{KEYS['alice']}", f"bob:{KEYS['bob']}"])
    return named + ApiKeys(tuple(load_keys_file(file)))


@dataclass
class World:
    server: GuardedServer
    api: dict[str, Api]
    runs: dict[str, str]
    call: str
    memories: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_store_extra()
    from loopwise.memory import HashEmbedder, Memory
    from server_agents import agents

    directory = tmp_path_factory.mktemp("tenants")
    memory = Memory(
        f"sqlite:///{directory / 'memory.sqlite'}",
        embedder=HashEmbedder(),
        summarize="deterministic",
    )
    keeper = Agent(FunctionModel(_noted), name="keeper", memory=memory)
    with guarded_service(
        directory,
        agents={**agents, "keeper": keeper},
        api_keys=_keys(directory),
        require_auth=True,
    ) as server:
        api = {name: Api(server.url, key) for name, key in KEYS.items()}
        runs: dict[str, str] = {}

        def start(who: str, name: str, agent: str, text: str, **meta: Any) -> None:
            body: dict[str, Any] = {"agent": agent, "input": text}
            if meta:
                body["metadata"] = meta
            reply = api[who].post("/v1/runs", body)
            assert reply.status == 202, reply.body
            runs[name] = reply.json()["id"]

        start("alice", "alice_gated", "gated", "alice-secret-gated")
        start("alice", "alice_done", "counting", "alice-secret-count")
        start("alice", "alice_mem", "keeper", "alice-secret-memory acme", memory_key="acme")
        start("bob", "bob_gated", "gated", "bob-task-gated")
        start("bob", "bob_mem", "keeper", "bob-note acme", memory_key="acme")
        start("bob", "bob_poison", "keeper", "POISON alice", memory_key="alice")
        start("bob", "bob_poison2", "keeper", "POISON alice/acme", memory_key="alice/acme")
        start("carol", "carol_done", "counting", "carol-task")
        for who, name in [("alice", "alice_done"), ("carol", "carol_done")]:
            wait_status(api[who], runs[name], "completed")
        for who, name in [("alice", "alice_mem"), ("bob", "bob_mem")]:
            wait_status(api[who], runs[name], "completed")
        for name in ("bob_poison", "bob_poison2"):
            wait_status(api["bob"], runs[name], "completed")
        waiting = wait_status(api["alice"], runs["alice_gated"], "input_required")
        wait_status(api["bob"], runs["bob_gated"], "input_required")
        memories = {
            who: api[who].get(f"/v1/memories?agent=keeper&key={key}").json()["data"]
            for who, key in [("alice", "acme"), ("bob", "acme")]
        }
        yield World(server, api, runs, waiting["pending_approvals"][0]["call_id"], memories)
    memory.close()


def _routes(w: World, run: str, memory_id: str) -> list[tuple[str, str, Any]]:
    """Every route, aimed at ``run`` and ``memory_id`` (alice's)."""
    return [
        ("POST", "/v1/runs", {"agent": "counting", "input": "x"}),
        ("GET", "/v1/runs", None),
        ("GET", f"/v1/runs/{run}", None),
        ("GET", f"/v1/runs/{run}/events?follow=false", None),
        ("POST", f"/v1/runs/{run}/cancel", None),
        ("POST", f"/v1/runs/{run}/approvals/{w.call}", {"decision": "approve"}),
        ("GET", "/v1/agents", None),
        ("GET", "/v1/memories?agent=keeper", None),
        ("GET", "/v1/memories/search?agent=keeper&q=alice-secret-memory", None),
        ("GET", f"/v1/memories/{memory_id}?agent=keeper", None),
        ("DELETE", f"/v1/memories/{memory_id}?agent=keeper", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
    ]


SECRETS = ("alice-secret",)


def _leaks(reply: Reply, w: World, asked: str = "") -> list[str]:
    """Alice's run ids, memory ids and secrets in a reply (an id the caller sent itself,
    echoed in a 404's message, is not a leak)."""
    text = reply.body.decode(errors="replace")
    owned = [w.runs[n] for n in w.runs if n.startswith("alice")]
    owned += [m["id"] for m in w.memories["alice"]]
    return [v for v in (*owned, *SECRETS) if v in text and v not in asked]


def test_the_auth_matrix_has_no_cross_principal_reads_or_writes(world: World) -> None:
    w = world
    [alice_memory] = w.memories["alice"]
    routes = _routes(w, w.runs["alice_gated"], alice_memory["id"])
    requests = leaks = 0
    # No key, a wrong key: 401 everywhere, nothing in the body.
    for api in (Api(w.server.url), Api(w.server.url, WRONG)):
        for method, path, body in routes:
            reply = api.request(method, path, body)
            requests += 1
            assert reply.status == 401, (method, path, reply.status)
            leaks += len(_leaks(reply, w))
    # Bob, on alice's run and memory: 404 (as if they did not exist) or none of hers.
    bob = w.api["bob"]
    for method, path, body in routes:
        reply = bob.request(method, path, body)
        requests += 1
        found = _leaks(reply, w, path)
        leaks += len(found)
        assert found == [], (method, path, found)
        if "/v1/runs/" in path or "/v1/memories/m" in path:
            assert reply.status == 404, (method, path, reply.status)
    # Memory ids and keys in every spelling that could reach alice's namespace.
    for key in ("", "acme", "alice", "alice/acme", "../alice/acme", "/acme", "alice%2Facme"):
        for path in (
            f"/v1/memories?agent=keeper&key={key}",
            f"/v1/memories/search?agent=keeper&q=alice-secret-memory&key={key}",
            f"/v1/memories/{alice_memory['id']}?agent=keeper&key={key}",
        ):
            reply = bob.get(path)
            requests += 1
            leaks += len(_leaks(reply, w, path))
            assert _leaks(reply, w, path) == [] and reply.status in (200, 404), path
        reply = bob.request("DELETE", f"/v1/memories/{alice_memory['id']}?agent=keeper&key={key}")
        requests += 1
        assert reply.status == 404
    # Nothing of alice's changed: her run still waits, her memory is there, unpoisoned.
    alice = w.api["alice"]
    assert wait_status(alice, w.runs["alice_gated"], "input_required")["decisions"] == []
    mine = alice.get("/v1/memories?agent=keeper&key=acme").json()["data"]
    assert [m["id"] for m in mine] == [alice_memory["id"]]
    assert mine[0]["namespace"] == {"agent": "keeper", "key": "alice/acme"}
    for key in ("", "acme"):
        listed = alice.get(f"/v1/memories?agent=keeper&key={key}").json()["data"]
        assert not any("POISON" in m["text"] for m in listed)
    assert not any("POISON" in m["text"] for m in _admin_memories(w, "alice"))
    assert not any("POISON" in m["text"] for m in _admin_memories(w, "alice/acme"))
    # Bob's "poisoning" runs wrote into his own namespace.
    assert any("POISON" in m["text"] for m in _admin_memories(w, "bob/alice"))
    writes = _cross_writes(w)
    figure(
        f"tenant matrix: {len(routes)} routes x {{no key, wrong key, other principal}} + "
        f"21 memory-key spellings = {requests} requests; cross-principal reads {leaks}, "
        f"writes {writes}"
    )
    assert leaks == 0 and writes == 0


def _admin_memories(w: World, key: str) -> list[dict[str, Any]]:
    reply = w.api["root"].get(f"/v1/memories?agent=keeper&key={key}&limit=200")
    data: list[dict[str, Any]] = reply.json()["data"]
    return data


def _cross_writes(w: World) -> int:
    """Changes to alice's things that did not come from alice."""
    run = w.api["root"].get(f"/v1/runs/{w.runs['alice_gated']}").json()
    changed = run["status"] != "input_required" or run["decisions"] != []
    memories = _admin_memories(w, "alice/acme")
    return int(changed) + int([m["id"] for m in memories] != [w.memories["alice"][0]["id"]])


def test_lists_show_only_the_principals_own(world: World) -> None:
    w = world
    ids = {
        who: {r["id"] for r in w.api[who].get("/v1/runs?limit=200").json()["data"]} for who in KEYS
    }
    alices = {w.runs[n] for n in w.runs if n.startswith("alice")}
    bobs = {w.runs[n] for n in w.runs if n.startswith("bob")}
    assert alices <= ids["alice"] and not ids["alice"] & bobs
    assert bobs <= ids["bob"] and not ids["bob"] & alices
    assert ids["carol"] == {w.runs["carol_done"]}
    assert alices | bobs | {w.runs["carol_done"]} <= ids["root"]  # the admin sees all
    run = w.api["alice"].get(f"/v1/runs/{w.runs['alice_done']}").json()
    assert run["principal"] == "alice"
    # Paging with a cursor stays within the principal's runs.
    page = w.api["bob"].get("/v1/runs?limit=1").json()
    seen = {page["data"][0]["id"]}
    while page["next_cursor"]:
        page = w.api["bob"].get(f"/v1/runs?limit=1&cursor={page['next_cursor']}").json()
        seen |= {r["id"] for r in page["data"]}
    assert seen == ids["bob"]


def test_a_restricted_principal_sees_only_its_agents_and_namespace(world: World) -> None:
    carol = world.api["carol"]
    assert [a["name"] for a in carol.get("/v1/agents").json()["data"]] == ["counting"]
    for agent in ("gated", "keeper", "nobody"):
        reply = carol.post("/v1/runs", {"agent": agent, "input": "x"})
        assert reply.status == 404 and "known: counting." in reply.json()["error"]["message"]
    assert carol.get("/v1/memories?agent=keeper").status == 404
    assert Principal("carol", memory="team").memory_key("acme") == "team/acme"
    assert Principal("carol", memory="team").memory_key("") == "team"
    root = world.api["root"]
    assert len(root.get("/v1/agents").json()["data"]) == 4


def test_decisions_record_who_made_them(world: World) -> None:
    w = world
    bob, alice = w.api["bob"], w.api["alice"]
    run = w.runs["bob_gated"]
    call = wait_status(bob, run, "input_required")["pending_approvals"][0]["call_id"]
    assert alice.post(f"/v1/runs/{run}/approvals/{call}", {"decision": "approve"}).status == 404
    reply = bob.post(f"/v1/runs/{run}/approvals/{call}", {"decision": "reject", "reason": "no"})
    assert reply.status == 200
    [decision] = reply.json()["decisions"]
    assert decision["principal"] == "bob" and decision["approve"] is False
    assert decision["call_id"] == call and decision["reason"] == "no"
    done = wait_status(bob, run, "completed")
    assert done["decisions"][0]["principal"] == "bob"
    listed = w.api["root"].get("/v1/runs?limit=200").json()["data"]
    assert next(r["decisions"] for r in listed if r["id"] == run)[0]["principal"] == "bob"


def test_an_idempotency_key_is_bound_to_its_principal(world: World) -> None:
    alice, bob = world.api["alice"], world.api["bob"]
    body = {"agent": "counting", "input": "same words"}
    key = {"Idempotency-Key": "shared-key-1"}
    first = alice.post("/v1/runs", body, headers=key).json()["id"]
    assert alice.post("/v1/runs", body, headers=key).json()["id"] == first
    theirs = bob.post("/v1/runs", body, headers=key)
    assert theirs.status == 202 and theirs.json()["id"] != first
    other = bob.post("/v1/runs", {**body, "input": "other"}, headers=key)
    assert other.status == 422 and first not in other.body.decode()
    assert bob.get(f"/v1/runs/{first}").status == 404


# -- keys and principals ------------------------------------------------------------------


def test_key_entries_name_their_principals(tmp_path: Path) -> None:
    digest, alice = parse_key_entry("alice:" + "k" * 20)
    assert alice == Principal("alice") and digest == hashlib.sha256(b"k" * 20).hexdigest()
    digest, plain = parse_key_entry("plain-key-0123456789")
    assert plain.name == "key-" + digest[:12] and not plain.admin
    _, colon = parse_key_entry("not a name:0123456789abcdef")  # a plain key with a colon
    assert colon.name.startswith("key-")
    with pytest.raises(UsageError, match="too short"):
        parse_key_entry("alice:short")
    keys = ApiKeys.of(["alice:" + "k" * 20, "bob:" + "b" * 20])
    assert keys.identify("k" * 20) == Principal("alice") and keys.identify("x" * 20) is None

    good = tmp_path / "keys.json"
    good.write_text(json.dumps({"keys": [{"name": "ops", "key": "o" * 20, "admin": True}]}))
    [(_, ops)] = load_keys_file(good)
    assert ops.admin and ops.agents is None
    bad_files = {
        "not json": "{",
        "no keys": "{}",
        "empty": '{"keys": []}',
        "bad name": '{"keys": [{"name": "a b", "key": "' + "x" * 20 + '"}]}',
        "both": '{"keys": [{"name": "a", "key": "'
        + "x" * 20
        + '", "sha256": "'
        + "0" * 64
        + '"}]}',
        "neither": '{"keys": [{"name": "a"}]}',
        "bad hash": '{"keys": [{"name": "a", "sha256": "xyz"}]}',
        "admin text": '{"keys": [{"name": "a", "key": "' + "x" * 20 + '", "admin": "yes"}]}',
        "unknown field": '{"keys": [{"name": "a", "key": "' + "x" * 20 + '", "role": "x"}]}',
        "same key twice": '{"keys": [{"name": "a", "key": "'
        + "x" * 20
        + '"}, {"name": "b", "key": "'
        + "x" * 20
        + '"}]}',
    }
    for name, text in bad_files.items():
        good.write_text(text)
        with pytest.raises(UsageError) as error:
            load_keys_file(good)
        assert "\n" not in str(error.value), name
    with pytest.raises(UsageError, match="Cannot read"):
        load_keys_file(tmp_path / "missing.toml")


# -- databases made before principals ----------------------------------------------------


def _old_database(url: str) -> str:
    """The runs table as earlier versions made it (no principal, no request hash), with
    one finished run in it; returns that run's id."""
    import sqlalchemy as sa

    from loopwise.durable import schema

    old = sa.MetaData()
    columns = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, unique=c.unique)
        for c in schema.runs.columns
        if c.name not in ("principal", "request_hash")
    ]
    table = sa.Table(schema.runs.name, old, *columns)
    for other in schema.metadata.sorted_tables:
        if other.name != schema.runs.name:
            other.to_metadata(old)
    engine = schema.create_engine(url)
    old.create_all(engine)
    run_id = f"run_{uuid.uuid4().hex}"
    with engine.begin() as conn:
        conn.execute(
            table.insert().values(
                id=run_id,
                agent="counting",
                status="completed",
                input="legacy-input",
                spec={},
                usage={},
                cost=0.0,
                steps=1,
                tool_calls=0,
                pending=[],
                segment=0,
                metadata={},
                idempotency_key="legacy-key",
                created_at=1.0,
                updated_at=1.0,
                finished_at=1.0,
            )
        )
    engine.dispose()
    return run_id


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
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
    name = f"loopwise_tenants_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_old_database_is_upgraded_in_place(backend: str, tmp_path: Path) -> None:
    import concurrent.futures

    import sqlalchemy as sa

    from loopwise.durable.store import Store

    with _database(backend, tmp_path) as url:
        legacy = _old_database(url)
        stores = [Store(url) for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # many processes start at once
            list(pool.map(lambda s: s.migrate(), stores))
        store = stores[0]
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("loopwise_runs")}
        assert {"principal", "request_hash"} <= columns
        record = store.get(legacy)
        assert record.principal is None and record.input == "legacy-input"
        assert [
            r.id for r in store.list_runs(status=None, agent=None, limit=10, cursor=None)[0]
        ] == [legacy]
        assert (
            store.list_runs(status=None, agent=None, limit=10, cursor=None, principal="a")[0] == []
        )
        store.migrate()  # twice is fine
        for s in stores:
            s.dispose()
    assert not Principal("alice").owns(None) and Principal("root", admin=True).owns(None)
