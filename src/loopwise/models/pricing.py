"""Prices in USD: from the maintained ``genai-prices`` table, or the user's own override."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from ..errors import UsageError
from ..messages import Usage

__all__ = ["FREE", "ModelPrice", "Pricer", "pricer_for"]

# Providers that run on the user's own hardware: their calls cost nothing per token.
_SELF_HOSTED = frozenset({"openai-compatible", "ollama", "vllm", "llamacpp", "local", "test"})


class Pricer(Protocol):
    def cost(self, usage: Usage) -> float:
        """The price in USD of a request (or requests) with this usage."""
        ...


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A price in USD per million tokens; cache rates default to the input rate."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    def cost(self, usage: Usage) -> float:
        read = self.cache_read_per_mtok
        write = self.cache_write_per_mtok
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        total = (
            max(uncached, 0) * self.input_per_mtok
            + usage.cache_read_tokens * (self.input_per_mtok if read is None else read)
            + usage.cache_write_tokens * (self.input_per_mtok if write is None else write)
            + usage.output_tokens * self.output_per_mtok
        )
        return total / 1_000_000


FREE = ModelPrice(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _TablePrice:
    provider: str
    model_name: str

    def cost(self, usage: Usage) -> float:
        from genai_prices import Usage as GPUsage
        from genai_prices import calc_price

        result = calc_price(
            GPUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            ),
            self.model_name,
            provider_id=self.provider,
        )
        return float(result.total_price)


@lru_cache(maxsize=64)
def _table_price(provider: str, model_name: str) -> _TablePrice | None:
    try:
        import genai_prices  # noqa: F401
    except ImportError:
        return None
    price = _TablePrice(provider, model_name)
    try:
        price.cost(Usage(input_tokens=1))
    except LookupError:
        return None
    return price


def pricer_for(
    provider: str, model_name: str, override: ModelPrice | None = None, *, required: bool = False
) -> Pricer | None:
    """The pricer for a model: the override, else free for self-hosted, else the table.

    With ``required`` (a USD budget is set) an unknown price is a clear error instead of
    ``None``: a budget that cannot be measured would not be a budget.
    """
    if override is not None:
        return override
    if provider in _SELF_HOSTED:
        return FREE
    found = _table_price(provider, model_name)
    if found is None and required:
        raise UsageError(
            f"No price is known for {provider}:{model_name}, so a USD budget cannot be "
            "enforced; pass price=ModelPrice(input_per_mtok=..., output_per_mtok=...) to Agent."
        )
    return found
