"""``OpenAIEmbedder`` against real servers: ``llama_cpp.server --embedding true`` serving
SmolLM2 (an OpenAI-compatible ``/v1/embeddings`` nobody here wrote), and a local HTTP server
that answers badly. A chat model's embeddings are weak; only the wire, the shapes and the
store round trip are asserted, not ranking quality."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from llama_server import llama_server, needs_server
from loopwise.errors import UsageError
from loopwise.memory import Memory, Namespace, OpenAIEmbedder
from memory_support import need_store_extra

SMOLLM2_WIDTH = 576  # SmolLM2-135M's hidden size: the length of its embeddings


@pytest.fixture(scope="module")
def embeddings_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("llama_embed") / "server.log"
    with llama_server(log, "--embedding", "true") as (url, _):
        yield url


@needs_server
def test_embeddings_from_llama_cpp_server_fill_a_memory(
    embeddings_url: str, tmp_path: Path
) -> None:
    need_store_extra()
    embedder = OpenAIEmbedder("smollm2", dimensions=SMOLLM2_WIDTH, base_url=embeddings_url)
    vectors = embedder.embed(["The staging database runs on db-7.", "Autumn leaves fall."])
    assert len(vectors) == 2 and all(len(v) == SMOLLM2_WIDTH for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-3 for v in vectors)  # normalised
    memory = Memory(f"sqlite:///{tmp_path / 'm.sqlite'}", embedder=embedder)
    try:
        ns = Namespace("ops")
        stored = asyncio.run(memory.remember("The staging database runs on db-7.", namespace=ns))
        hits = asyncio.run(memory.recall("staging database host", namespace=ns, threshold=0.0))
        assert [h.record.id for h in hits] == [stored.id]
        figure(
            f"OpenAIEmbedder via llama_cpp.server --embedding: {SMOLLM2_WIDTH} dims, "
            f"relevance of the stored fact {hits[0].relevance:.2f}"
        )
    finally:
        memory.close()
    wrong = OpenAIEmbedder("smollm2", dimensions=384, base_url=embeddings_url)
    with pytest.raises(UsageError, match="not of 384 dimensions"):
        wrong.embed(["x"])


class _Bad(BaseHTTPRequestHandler):
    replies: list[tuple[int, bytes]] = []  # noqa: RUF012 - set per test, one server at a time
    bodies: list[Any] = []  # noqa: RUF012

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        status, body = type(self).replies.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def bad_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bad)
    _Bad.replies, _Bad.bodies = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_embedding_replies_are_clear_errors(bad_server: str) -> None:
    embedder = OpenAIEmbedder("m", dimensions=2, base_url=bad_server, api_key="k", batch_size=2)
    _Bad.replies = [(200, b'{"data": [{"index": 1, "embedding": [0, 2]}, '
                          b'{"index": 0, "embedding": [3, 4]}]}')]  # fmt: skip
    assert embedder.embed(["a", "b"]) == [[0.6, 0.8], [0.0, 1.0]]  # sorted by index
    assert _Bad.bodies[-1] == {"model": "m", "input": ["a", "b"]}
    _Bad.replies = [(500, b'{"error": "model not loaded"}')]
    with pytest.raises(UsageError, match=r"answered HTTP 500: .*model not loaded"):
        embedder.embed(["a"])
    _Bad.replies = [(200, b'{"data": [{"index": 0, "embedding": [1, 0]}]}')]
    with pytest.raises(UsageError, match="returned 1 vectors for 2 texts"):
        embedder.embed(["a", "b"])
    for body in (b"<html>not json</html>", b'{"data": [{"index": 0}]}', b'{"object": "x"}'):
        _Bad.replies = [(200, body)]
        with pytest.raises(UsageError, match=r"did not answer with OpenAI.s embeddings JSON"):
            embedder.embed(["a"])
    # Per-token vectors (llama.cpp's server, model without pooling) are mean-pooled.
    _Bad.replies = [(200, b'{"data": [{"index": 0, "embedding": [[1, 0], [3, 4]]}]}')]
    assert embedder.embed(["a"]) == [[pytest.approx(2 / 2.828427), pytest.approx(2 / 2.828427)]]
