"""Retries with exponential backoff for transient provider failures, honouring Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

__all__ = ["RetryPolicy", "parse_retry_after", "retry_after_from", "with_retries"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry: attempts = 1 + ``max_retries``."""

    max_retries: int = 4
    initial_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (or ``retry-after-ms``) header value."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


def retry_after_from(headers: _Headers) -> float | None:
    """Seconds to wait from a response's ``retry-after-ms`` or ``retry-after`` header."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], tuple[bool, float | None]],
    policy: RetryPolicy,
) -> T:
    """Run ``call``; on an error that ``classify`` calls retryable, wait and try again.

    ``classify(exc)`` returns ``(retryable, retry_after_seconds)``. The last error is
    re-raised when retries run out or the error is not retryable.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            retryable, retry_after = classify(exc)
            if not retryable or attempt >= policy.max_retries:
                raise
            delay = policy.initial_delay * (2**attempt)
            delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
            if retry_after is not None:
                delay = max(delay, retry_after)
            await asyncio.sleep(min(delay, policy.max_delay))
            attempt += 1
