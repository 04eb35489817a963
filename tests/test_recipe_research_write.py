"""``research-write``: researcher → writer → reviewer → revision, on a real HTTP source and
a real file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loopwise.agents.recipes import research_write
from loopwise.messages import Message, SystemMessage, ToolDefinition
from loopwise.models.testing import FunctionModel, Turn, call
from recipe_support import all_results, first_user_text, last_results, tool_names

PAGE = "<html><body><h1>WAL</h1><p>WAL mode lets readers run during a write.</p></body></html>"


@contextmanager
def page_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/wal.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def system_of(messages: list[Message]) -> str:
    first = messages[0]
    return first.content if isinstance(first, SystemMessage) else ""


def driver(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    role = system_of(messages)
    task = first_user_text(messages)
    if "http_get" in tool_names(tools):  # the researcher
        if not last_results(messages):
            url = next(line[2:] for line in task.splitlines() if line.startswith("- http"))
            return [call("http_get", url=url), call("read_file", path="notes.txt")]
        facts = " ".join(r.content for r in all_results(messages))
        return "Notes: " + ("readers run during a write" if "readers run" in facts else "?")
    if role.startswith("You are a strict reviewer"):
        return "Add the checkpoint fact from the notes."
    if "Revise your draft" in task:
        return "# WAL\n\nWAL mode lets readers run during a write. A checkpoint moves pages back."
    assert "checkpoint moves pages back" in task  # the file source reached the writer
    return "# WAL\n\nWAL mode lets readers run during a write."


def test_research_write_runs_the_team_and_writes_the_revised_document(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("A checkpoint moves pages back into the database.\n")
    model = FunctionModel(driver)
    events: list[Any] = []
    with page_server() as url:
        result = asyncio.run(
            research_write.research_write(
                "SQLite WAL mode",
                tmp_path / "wal.md",
                sources=[url, "notes.txt"],
                model=model,
                allow=["127.0.0.1"],
                workspace=tmp_path,
                on_event=events.append,
            )
        )
    assert result.status == "completed", result
    text = (tmp_path / "wal.md").read_text()
    assert "readers run during a write" in text and "A checkpoint moves pages back" in text
    assert "## Sources" in text and "- notes.txt" in text
    agents = [r.run_id.split(".")[-2] for r in result.runs[1:]]
    assert agents == ["document", "document-review", "document"]  # write, review, revise
    assert result.facts["reviews"] == ["Add the checkpoint fact from the notes."]
    started = [e for e in events if e.type == "run_started"]
    assert len(started) == 4 and all(e.parent_run_id for e in started)
    assert {e.depth for e in started} == {1, 2}  # the writer team sits inside the recipe
    assert result.notes == []
