"""Real inputs for the recipe tests: git repositories, log files, a PyPI-style server."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loopwise.messages import Message, TextPart, ToolDefinition, ToolResultPart, UserMessage


def commit(repo: Path, author: str, path: str, text: str, when: str = "") -> None:
    """Write ``path`` and commit it as ``author`` (name; email derived)."""
    email = f"{author.split()[0].lower()}@example.com"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": email,
    }
    if when:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    subprocess.run(["git", "add", path], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"edit {path}"], cwd=repo, env=env, check=True)


def make_repo(root: Path) -> Path:
    """A repository with three authors (Alice 3, Bob 2, Carol 1 recent; Dave 1 old)."""
    repo = root / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    commit(repo, "Dave Old", "LEGACY.txt", "old\n", when="2001-01-01T00:00:00")
    commit(repo, "Alice Smith", "src/app.py", "def main():\n    pass  # TODO: handle errors\n")
    commit(repo, "Bob Jones", "README.md", "# Project\n")
    commit(repo, "Alice Smith", "src/db.py", "# FIXME: connection leak\nPOOL = 1\n")
    commit(repo, "Carol White", "docs/guide.md", "Guide\n")
    commit(repo, "Bob Jones", "src/app.py", "def main():\n    return 1  # TODO: handle errors\n")
    commit(repo, "Alice Smith", "setup.cfg", "[metadata]\nname = project\n")
    return repo


def last_results(messages: list[Message]) -> list[ToolResultPart]:
    """The tool results of the last user message (empty when it holds none)."""
    last = messages[-1]
    if not isinstance(last, UserMessage):
        return []
    return [p for p in last.parts if isinstance(p, ToolResultPart)]


def all_results(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


def tool_names(tools: list[ToolDefinition]) -> set[str]:
    return {t.name for t in tools}


def first_user_text(messages: list[Message]) -> str:
    for m in messages:
        if isinstance(m, UserMessage):
            return "".join(p.text for p in m.parts if isinstance(p, TextPart))
    return ""


@contextmanager
def pypi_server(packages: Mapping[str, Mapping[str, Any]]) -> Iterator[str]:
    """A local HTTP server answering ``/pypi/<name>/json`` like PyPI; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            data = packages.get(parts[1].lower()) if len(parts) == 3 else None
            if data is None or parts[0] != "pypi" or parts[2] != "json":
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": "Not Found"}')
                return
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def pypi_entry(latest: str, *versions: str) -> dict[str, Any]:
    return {"info": {"version": latest}, "releases": {v: [] for v in (*versions, latest)}}
